"""Each backend is one unit of building and running: specs, the one build template, and what an install needs.

The runtime-only installs the README promises are reproduced by blocking modules in a fresh interpreter (an
import hook that refuses them, as a machine without the package would): `bisenet-rt build --onnx` and the
Segmenter on ONNX Runtime and OpenVINO without PyTorch, and `bisenet-rt build` with no runtime at all.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bisenet_rt.backends import SPECS, spec_for_path
from bisenet_rt.errors import BuildError
from bisenet_rt.precision import Precision
from conftest import REPO, street_frame

#: Prepended to a script run in a fresh interpreter: modules named in BLOCKED cannot be imported there.
_BLOCKER = textwrap.dedent("""
    import sys

    class _Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, _Blocked())
""")


def _run_without(blocked: set[str], script: str, cwd) -> subprocess.CompletedProcess:
    code = f"BLOCKED = {sorted(blocked)!r}\n{_BLOCKER}\n{textwrap.dedent(script)}"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_every_spec_is_complete():
    """Every backend says what it opens, how to install it and, where it builds, which graph each precision needs."""
    for name, spec in SPECS.items():
        assert spec.name == name and spec.opens and spec.install.startswith("pip install '.[")
        assert (spec.compile is None) == (not spec.graph_forms) == (not spec.writes)
        for precision, form in spec.graph_forms.items():
            assert form.precision in (precision, Precision.FP32)  # BF16 on OpenVINO is the FP32 graph with a hint
    assert {spec_for_path(f"x{s}").name for s in (".engine", ".onnx", ".xml", ".pth")} == set(SPECS)


def test_a_precision_a_backend_does_not_build_is_refused():
    with pytest.raises(BuildError, match="onnxruntime backend builds fp32, fp16, int8, not bf16"):
        SPECS["onnxruntime"].graph_form(Precision.BF16)


def test_build_and_run_from_onnx_without_torch(exported, tmp_path):
    """`pip install '.[onnxruntime]'` / `'.[openvino]'`: build from an exported graph and segment, torch never imported."""
    if SPECS["openvino"].availability() is not None:
        pytest.skip(f"OpenVINO cannot run here: {SPECS['openvino'].availability()}")
    proc = _run_without({"torch", "torchvision"}, f"""
        import numpy as np
        from bisenet_rt.cli import main
        from bisenet_rt import Segmenter

        frame = np.zeros((256, 512, 3), np.uint8)
        for backend, out in (("onnxruntime", "ort.onnx"), ("openvino", "ov.xml")):
            assert main(["build", "--backend", backend, "--precision", "fp32", "--onnx", {str(exported["fp32"])!r},
                         "--engines-dir", {str(tmp_path)!r}, "-o", {str(tmp_path)!r} + "/" + out]) == 0
            with Segmenter({str(tmp_path)!r} + "/" + out) as seg:
                assert seg.backend.name == backend and seg(frame).shape == (256, 512)
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    """, tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_build_from_weights_without_torch_names_the_extra(exported, tmp_path):
    proc = _run_without({"torch"}, """
        from bisenet_rt.cli import main
        raise SystemExit(main(["build", "--backend", "onnxruntime", "--precision", "fp32"]))
    """, tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "needs PyTorch" in lines[-1] and "pip install '.[torch]'" in lines[-1]


@pytest.mark.parametrize("backend", ["auto", "onnxruntime", "openvino"])
def test_build_without_any_runtime_is_one_line_naming_the_extra(exported, tmp_path, backend):
    """`pip install .` alone: no runtime to build for, and the error says which extra installs one."""
    proc = _run_without({"torch", "onnxruntime", "openvino", "tensorrt"}, f"""
        from bisenet_rt.cli import main
        raise SystemExit(main(["build", "--backend", {backend!r}, "--onnx", {str(exported["fp32"])!r},
                               "--engines-dir", {str(tmp_path)!r}]))
    """, tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1
    extra = "onnxruntime" if backend == "auto" else backend
    assert f"pip install '.[{extra}]'" in errors[0], errors[0]


def test_openvino_holds_a_request_per_submission_in_flight(exported):
    """`Segmenter(path, depth=4)` on OpenVINO: the depth reaches the backend's constructor, which makes 4 requests."""
    from bisenet_rt import Segmenter

    if SPECS["openvino"].availability() is not None:
        pytest.skip(f"OpenVINO cannot run here: {SPECS['openvino'].availability()}")
    with Segmenter(exported["fp32"], backend="openvino", depth=4, cache_dir=None) as seg:
        assert seg.depth == 4 and len(seg.backend._requests) == 4
        frames = [street_frame(64, 128, seed=s) for s in range(6)]
        labels = list(seg.stream(frames))
        assert [lab.shape for lab in labels] == [(64, 128)] * 6
        assert np.array_equal(labels[0], seg(frames[0]))
