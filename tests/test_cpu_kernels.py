"""The CPU pre/post-processing kernels (`backends.cpu_kernels`) against the PyTorch oracle, and the CPU backends
that run them around their graph's model against the same backends running the graph's own pre/post.

Bars: the post-processing equal to the oracle's labels but for ties (>= 99.99 % of pixels, random logits spread
by several units, at every frame size the graph forms are held to, tiny and odd ones included); the
pre-processing within 2e-6 of the oracle's normalized input (values up to ~3.2: float rounding of a
different summation order); a backend with the kernels equal to itself without them on >= 99.99 % of pixels
in FP32 (street and noise frames). The OpenVINO IR case matters on its own: OpenVINO's converter moves the
BGR -> RGB swap into the first convolutions, so the kernels must read the channel map from the graph.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
import torch

pytest.importorskip("numba", reason="numba is not installed (pip install numba): the CPU kernels cannot run")

from bisenet_rt.backends import open_backend  # noqa: E402
from bisenet_rt.backends.cpu_kernels import CpuKernels, PixelMap, uses_kernels  # noqa: E402
from bisenet_rt.errors import BackendUnavailableError, ConfigError  # noqa: E402
from bisenet_rt.families import ChannelOrder, DEFAULT_FAMILY, Normalization  # noqa: E402
from bisenet_rt.model.reference import postprocess, preprocess  # noqa: E402
from conftest import street_frame  # noqa: E402

#: (H, W) frames, as tests/test_export.py holds the graph's forms to: 1 x 1, odd, 1 pixel tall or wide, smaller
#: than the model, the paper's size.
POST_SIZES = [(1, 1), (2, 3), (5, 7), (17, 33), (31, 1), (1, 45), (100, 37), (479, 641), (1024, 2048)]
MODEL_SIZE = (1024, 512)


@pytest.fixture(scope="module")
def kernels():
    with_family = CpuKernels(MODEL_SIZE, PixelMap.from_normalization(DEFAULT_FAMILY.normalization), threads=2)
    yield with_family
    with_family.close()


def _oracle_post(logits: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    with torch.no_grad():
        fine = torch.nn.functional.interpolate(torch.from_numpy(logits).float(), scale_factor=8, mode="bilinear",
                                               align_corners=False)
    return postprocess(fine, frame_hw).numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_upsample_argmax_is_the_oracle_at_any_frame_size(kernels, dtype):
    logits = np.random.default_rng(7).normal(0, 3, (2, 19, 64, 128)).astype(dtype)
    for h, w in POST_SIZES:
        labels = kernels.postprocess(logits, (h, w))
        assert labels.shape == (2, h, w) and labels.dtype == np.uint8
        assert (labels == _oracle_post(logits, (h, w))).mean() >= 0.9999, (h, w)


def test_upsample_argmax_writes_into_out_and_breaks_ties_to_the_first_class(kernels):
    """Equal logits everywhere: every runtime's arg-max answers class 0; `out` is filled and returned."""
    out = np.full((1, 40, 60), 255, np.uint8)
    assert kernels.postprocess(np.zeros((1, 19, 64, 128), np.float32), (40, 60), out) is out
    assert not out.any()


def test_upsample_argmax_refuses_logits_that_are_not_the_models(kernels):
    with pytest.raises(ValueError, match="divided by one integer"):
        kernels.postprocess(np.zeros((1, 19, 60, 128), np.float32), (10, 10))


@pytest.mark.parametrize("order", list(ChannelOrder), ids=str)
@pytest.mark.parametrize("hwn", [(1024, 2048, 1), (479, 641, 2), (1, 1, 1), (300, 200, 1)], ids=str)
def test_resize_normalize_is_the_oracle(order, hwn):
    h, w, n = hwn
    normalization = Normalization(mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3), order=order)
    frames = np.random.default_rng(h).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    with CpuKernels(MODEL_SIZE, PixelMap.from_normalization(normalization), threads=2) as kernels:
        ours = kernels.preprocess(frames)
    reference = preprocess(torch.from_numpy(frames), MODEL_SIZE, normalization).numpy()
    assert ours.shape == reference.shape == (n, 3, 512, 1024) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-6)


def test_the_choice_is_made_in_one_place(caplog):
    assert uses_kernels("auto", "onnxruntime", None) and uses_kernels("kernels", "openvino", None)
    assert not uses_kernels("graph", "openvino", None)
    with caplog.at_level(logging.INFO, logger="bisenet_rt.backends.cpu_kernels"):
        assert not uses_kernels("auto", "openvino", "numba is not installed")
    assert "numba is not installed" in caplog.text
    with pytest.raises(BackendUnavailableError, match="prepost='graph'"):
        uses_kernels("kernels", "openvino", "numba is not installed")
    with pytest.raises(ConfigError, match="auto, kernels, graph"):
        uses_kernels("fast", "openvino", None)


def _frames() -> np.ndarray:
    street = street_frame(479, 641, seed=21)
    return np.stack([street, np.random.default_rng(22).integers(0, 256, street.shape, dtype=np.uint8)])


def _agree_with_graph(path, backend: str, **options) -> float:
    frames = _frames()
    with open_backend(path, backend, prepost="graph", **options) as graph:
        assert graph.prepost == "graph"
        expected = graph.infer(frames)
    with open_backend(path, backend, **options) as fast:
        assert fast.prepost == "kernels" and fast.versions()["prepost"] == "kernels"
        labels = fast.infer(frames)
        out = np.empty_like(labels)
        assert fast.infer(frames, out) is out
        np.testing.assert_array_equal(out, labels)
    assert labels.shape == frames.shape[:3] and labels.dtype == np.uint8
    return float((labels == expected).mean())


@pytest.mark.parametrize("key", ["fp32", "fp32_row_bands", "fp16"])
def test_onnxruntime_with_the_kernels_equals_its_graph(exported, key):
    """FP16: the graph interpolates the logits in FP16, the kernel in FP32 (from the same FP16 logits), so they
    differ where FP16 rounding flips a near-tie: held to the FP16 bar of tests/test_export.py (99 %)."""
    pytest.importorskip("onnxruntime")
    assert _agree_with_graph(exported[key], "onnxruntime") >= (0.9999 if key != "fp16" else 0.99)


def test_openvino_with_the_kernels_equals_its_graph(exported):
    pytest.importorskip("openvino")
    assert _agree_with_graph(exported["fp32_column_bands"], "openvino", precision="fp32", cache_dir=None) >= 0.9999


def test_openvino_ir_with_the_channel_swap_moved_into_the_model(exported, tmp_path):
    """An IR that `bisenet-rt build` wrote has no BGR -> RGB Gather left in its pre-processing (the converter
    folded it into the first convolutions); the kernels read the map from the graph and agree with it."""
    pytest.importorskip("openvino")
    import openvino as ov

    from bisenet_rt.cli import main

    ir = tmp_path / "fp32.xml"
    assert main(["build", "--backend", "openvino", "--precision", "fp32", "--onnx", str(exported["fp32_column_bands"]),
                 "-o", str(ir)]) == 0
    names = {op.get_friendly_name() for op in ov.Core().read_model(str(ir)).get_ops()}
    assert "pre/bgr_to_rgb" not in names, "the converter kept the swap; this test no longer covers the fold"
    assert _agree_with_graph(ir, "openvino", cache_dir=None) >= 0.9999


def test_a_graph_without_named_pre_processing_runs_its_own(exported, tmp_path, caplog):
    """A graph whose pre-processing nodes were renamed: 'auto' runs the graph's own pre/post and says why,
    'kernels' refuses."""
    pytest.importorskip("onnxruntime")
    proto = onnx.load(str(exported["fp32"]))
    for node in proto.graph.node:
        if node.name == "pre/scale":
            node.name = "renamed/scale"
    path = tmp_path / "renamed.onnx"
    onnx.save(proto, str(path))
    with caplog.at_level(logging.INFO, logger="bisenet_rt.backends.cpu_kernels"):
        with open_backend(path, "onnxruntime") as backend:
            assert backend.prepost == "graph"
    assert "no named pre-processing" in caplog.text
    with pytest.raises(BackendUnavailableError, match="no named pre-processing"):
        open_backend(path, "onnxruntime", prepost="kernels")


def test_a_kernel_numba_cannot_cache_still_compiles(caplog):
    """numba refuses to cache code without a writable place for it (here: code with no source file); the kernel
    is then compiled without a cache instead of failing the backend's load."""
    from bisenet_rt.backends.cpu_kernels.jit import compiled

    namespace: dict = {}
    exec(compile("def double(a, out):\n    for i in range(a.shape[0]):\n        out[i] = 2 * a[i]\n", "<generated>",
                 "exec"), namespace)
    with caplog.at_level(logging.INFO, logger="bisenet_rt.backends.cpu_kernels.jit"):
        kernel = compiled(namespace["double"])
    assert "cannot cache double" in caplog.text
    out = np.empty(3)
    kernel(np.arange(3.0), out)
    np.testing.assert_array_equal(out, [0.0, 2.0, 4.0])


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_fixed_size_graph_at_another_model_size(confident_model, tmp_path, backend):
    """A graph exported with a fixed frame size and batch (static input dims) at model size 512x256: the backend
    still runs its model part with the kernels, and matches the oracle as the whole graph does."""
    pytest.importorskip(backend)
    from bisenet_rt.graph.export import ExportConfig, export_onnx
    from bisenet_rt.model.reference import reference_labels

    path = tmp_path / "fixed.onnx"
    export_onnx(confident_model, path, ExportConfig(model_size=(512, 256), frame_size=(640, 480), batch=1,
                                                    post="column_bands"))
    frames = street_frame(480, 640, seed=5)[None]
    options = {"cache_dir": None} if backend == "openvino" else {}
    with open_backend(path, backend, prepost="kernels", **options) as fast:
        labels = fast.infer(frames)
    reference = reference_labels(confident_model, torch.from_numpy(frames), (512, 256)).numpy()
    assert (labels == reference).mean() >= 0.999
