"""OpenVINO backend: FP32 agrees with ONNX Runtime and its post-processing form with the oracle, IR round-trips,
BF16 only where the CPU has it, same errors."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import post_only_graph, street_frame

pytest.importorskip("openvino", reason="openvino is not installed (pip install openvino)")

from bisenet_rt import Segmenter  # noqa: E402
from bisenet_rt.backends.openvino.run import supports_bf16  # noqa: E402
from bisenet_rt.errors import BackendUnavailableError, BuildError, ArtifactError, InputError  # noqa: E402
from bisenet_rt.precision import Precision  # noqa: E402
from bisenet_rt.backends import SPECS  # noqa: E402
from bisenet_rt.post_form import PostForm  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "bisenet_rt" / "assets" / "demo_bisenetv2_synth.pth"
BF16 = supports_bf16()
#: conftest's `exported` key of the FP32 graph in the post-processing form OpenVINO builds get.
OV_POST = SPECS["openvino"].graph_form(Precision.FP32).post
OV_FORM = "fp32" if OV_POST is PostForm.RESIZE else f"fp32_{OV_POST}"


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return float((a == b).mean())


@pytest.fixture(scope="module")
def ort(exported):
    with Segmenter(exported["fp32"], backend="onnxruntime") as seg:
        yield seg


@pytest.fixture(scope="module")
def ov_fp32(exported):
    with Segmenter(exported["fp32"], backend="openvino", precision="fp32", cache_dir=None) as seg:
        yield seg


@pytest.fixture(scope="module")
def ir_fp32(exported, tmp_path_factory):
    """The fp32 graph built to IR through the CLI."""
    from bisenet_rt.cli import main

    out = tmp_path_factory.mktemp("ir") / "fp32.xml"
    assert main(["build", "--backend", "openvino", "--precision", "fp32", "--onnx", str(exported["fp32"]),
                 "-o", str(out)]) == 0
    return out


@pytest.mark.parametrize("hw", [(256, 512), (479, 641)], ids=["512x256", "641x479"])
def test_fp32_matches_onnxruntime(ort, ov_fp32, hw):
    frame = street_frame(*hw, seed=3)
    labels = ov_fp32(frame)
    assert labels.shape == hw
    assert _agreement(labels, ort(frame)) >= 0.999


@pytest.mark.parametrize("hint", ["latency", "throughput"])
def test_batch_of_two_matches_onnxruntime(exported, ort, hint):
    batch = np.stack([street_frame(240, 320, seed=s) for s in (4, 5)])
    with Segmenter(exported["fp32"], backend="openvino", precision="fp32", hint=hint, cache_dir=None) as seg:
        labels = seg(batch)
        assert seg.backend.versions()["performance_hint"] == hint.upper()
    assert labels.shape == (2, 240, 320)
    assert _agreement(labels, ort(batch)) >= 0.999


@pytest.mark.parametrize("kind", ["street", "noise"])
def test_its_post_form_matches_the_oracle(exported, confident_model, kind):
    """OpenVINO FP32 on the graph its builds get (its spec's graph form), with the graph's own pre/post and with the
    CPU kernels: labels equal to the PyTorch reference pipeline on >= 99.9 % of pixels, a batch of 2 at an odd size,
    street-like and noise frames (as tests/test_export.py holds ONNX Runtime)."""
    import torch

    from bisenet_rt.model.reference import reference_labels

    rng = np.random.default_rng(11)
    frames = (np.stack([street_frame(479, 641, seed=s) for s in (12, 13)]) if kind == "street"
              else rng.integers(0, 256, (2, 479, 641, 3), dtype=np.uint8))
    for prepost in ("graph", "kernels"):
        with Segmenter(exported[OV_FORM], backend="openvino", precision="fp32", cache_dir=None,
                       prepost=prepost) as seg:
            labels = seg(frames)
        assert _agreement(labels, reference_labels(confident_model, torch.from_numpy(frames)).numpy()) >= 0.999


@pytest.mark.parametrize("form", list(PostForm), ids=str)
def test_post_processing_alone_is_exact_on_openvino(exported, form):
    """Every form's post-processing alone, fed the same batch of 2 logits, gives the oracle's labels on OpenVINO
    FP32 at every frame size (tiny, odd, smaller than the band counts, 1 pixel tall or wide)."""
    import openvino as ov
    import onnx
    import torch

    from bisenet_rt.backends.openvino.tune import tune_graph
    from bisenet_rt.model.reference import postprocess

    key = "fp32" if form is PostForm.RESIZE else f"fp32_{form}"
    proto, _ = post_only_graph(onnx.load(str(exported[key])))
    core = ov.Core()
    model = core.read_model(proto.SerializeToString(), b"")
    tune_graph(model)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    logits = np.random.default_rng(7).normal(0, 3, (2, 19, 64, 128)).astype(np.float32)
    fine = torch.nn.functional.interpolate(torch.from_numpy(logits), scale_factor=8, mode="bilinear",
                                           align_corners=False)
    for h, w in [(1, 1), (5, 7), (17, 33), (1, 45), (100, 37), (479, 641)]:
        labels = compiled({0: np.zeros((2, h, w, 3), np.uint8), 1: logits})[0]
        assert labels.shape == (2, h, w)
        assert (labels == postprocess(fine, (h, w)).numpy()).mean() >= 0.9999, (h, w)


def test_fp32_is_really_fp32(ov_fp32):
    """OpenVINO would silently compute in BF16 on BF16 CPUs; the compiled model must report f32."""
    assert ov_fp32.backend.versions()["inference_precision"] == "f32"
    assert ov_fp32.precision is Precision.FP32
    assert ov_fp32.device.endswith("(OpenVINO fp32)")


def test_tuned_graph_equals_untuned(exported, ov_fp32):
    """The channels-first rewrites change speed, not values (same precision, same frame)."""
    import openvino as ov

    assert ov_fp32.backend.rewrites, "the pipeline graph's NHWC upsample should have been rewritten"
    frame = street_frame(200, 300, seed=6)
    plain = ov.Core().compile_model(str(exported["fp32"]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    with Segmenter(exported["fp32"], backend="openvino", precision="fp32", cache_dir=None, prepost="graph") as tuned:
        assert _agreement(tuned(frame), plain(frame[None])[0][0]) >= 0.9999


def test_ir_round_trip(ir_fp32, ov_fp32):
    frame = street_frame(256, 512, seed=7)
    with Segmenter(ir_fp32, cache_dir=None) as seg:  # .xml opens on OpenVINO by its suffix
        assert seg.backend.name == "openvino" and seg.precision is Precision.FP32
        assert np.array_equal(seg(frame), ov_fp32(frame))


def test_ir_sidecar_records_the_build(ir_fp32):
    import json

    sidecar = json.loads(ir_fp32.with_name(ir_fp32.name + ".json").read_text())
    assert sidecar["backend"] == "openvino" and sidecar["info"]["precision"] == "fp32"
    assert sidecar["inference_precision"] == "fp32" and sidecar["openvino_version"] and sidecar["cpu"]


def test_broken_ir_is_a_load_error(ir_fp32, tmp_path):
    for src, name in ((ir_fp32, "m.xml"), (ir_fp32.with_suffix(".bin"), "m.bin"),
                      (ir_fp32.with_name(ir_fp32.name + ".json"), "m.xml.json")):
        shutil.copy(src, tmp_path / name)
    (tmp_path / "m.xml").write_text("<net><layers>broken")
    with pytest.raises(ArtifactError, match="rebuild"):
        Segmenter(tmp_path / "m.xml", cache_dir=None)
    shutil.copy(ir_fp32, tmp_path / "m.xml")
    (tmp_path / "m.bin").unlink()
    with pytest.raises(ArtifactError, match="m.bin is missing"):
        Segmenter(tmp_path / "m.xml", cache_dir=None)
    with pytest.raises(ArtifactError, match="no such file"):
        Segmenter(tmp_path / "absent.xml", cache_dir=None)


def test_plain_and_corrupt_onnx_are_refused(exported, tmp_path):
    with pytest.raises(ArtifactError, match="plain model graph"):
        Segmenter(exported["plain"], backend="openvino", cache_dir=None)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(ArtifactError, match="not a readable ONNX"):
        Segmenter(bad, backend="openvino", cache_dir=None)


def test_options_are_checked(exported):
    with pytest.raises(ValueError, match="unknown hint"):
        Segmenter(exported["fp32"], backend="openvino", hint="fast", cache_dir=None)
    with pytest.raises(InputError, match="fp16 graph"):
        Segmenter(exported["fp16"], backend="openvino", precision="fp32", cache_dir=None)


@pytest.mark.parametrize("bad", [
    np.zeros((32, 48, 3), np.float32),
    np.zeros((32, 48, 4), np.uint8),
    np.zeros((32, 48), np.uint8),
    np.zeros((0, 32, 48, 3), np.uint8),
    [np.zeros((32, 48, 3), np.uint8), "frame"],
], ids=["float", "bgra", "2d", "empty-batch", "list-with-str"])
def test_bad_input_errors_match_onnxruntime(ort, ov_fp32, bad):
    with pytest.raises(Exception) as from_ort:
        ort(bad)
    with pytest.raises(Exception) as from_ov:
        ov_fp32(bad)
    assert type(from_ov.value) is type(from_ort.value)
    assert str(from_ov.value) == str(from_ort.value)


def test_fp16_graph_runs(exported):
    """The FP16-typed graph opens; it computes in fp16 where the CPU has FP16 arithmetic, else fp32."""
    frame = street_frame(256, 512, seed=8)
    with Segmenter(exported["fp16"], backend="openvino", cache_dir=None) as seg, \
            Segmenter(exported["fp16"], backend="onnxruntime") as ref:
        assert seg.precision is Precision.FP16
        assert _agreement(seg(frame), ref(frame)) >= 0.95


@pytest.mark.skipif(BF16, reason="this CPU has BF16; the refusal is tested on CPUs without it")
def test_bf16_refused_without_cpu_support(exported, tmp_path):
    from bisenet_rt.builder import BuildConfig, build

    with pytest.raises(BackendUnavailableError, match="BF16"):
        Segmenter(exported["fp32"], backend="openvino", precision="bf16", cache_dir=None)
    with pytest.raises(BackendUnavailableError, match="BF16"):
        build(BuildConfig(precision="bf16", backend="openvino", onnx=exported["fp32"], output=tmp_path / "bf16.xml"))


@pytest.mark.skipif(not BF16, reason="this CPU has no BF16 arithmetic (OpenVINO does not report BF16)")
def test_bf16_agrees_with_fp32_where_the_decision_is_clear(exported, confident_model, ov_fp32):
    """Random weights amplify BF16 rounding (their top-1/top-2 margins are small and chaotic), so the
    comparison is made where FP32 decides by more than 2 logits; a BF16 error in the index arithmetic
    of the post-processing would break everywhere, which the overall floor catches."""
    import torch
    import torch.nn.functional as F

    from bisenet_rt.model.reference import reference_logits

    frames = np.stack([street_frame(256, 512, seed=s) for s in (9, 10)])
    with Segmenter(exported[OV_FORM], backend="openvino", precision="bf16", cache_dir=None) as seg:
        assert seg.precision is Precision.BF16 and seg.backend.versions()["inference_precision"] == "bf16"
        bf16 = seg(frames)
    fp32 = ov_fp32(frames)
    logits = F.interpolate(reference_logits(confident_model, torch.from_numpy(frames)), size=frames.shape[1:3],
                           mode="bilinear", align_corners=False)
    top2 = logits.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]).numpy() > 2.0
    assert clear.mean() > 0.1
    assert float((bf16 == fp32)[clear].mean()) >= 0.98
    assert _agreement(bf16, fp32) >= 0.75


def _topk_precisions(compiled) -> set[str]:
    return {op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()
            if op.get_rt_info()["layerType"].astype(str) == "TopK"}


@pytest.mark.skipif(not BF16, reason="this CPU has no BF16 arithmetic (OpenVINO does not report BF16)")
def test_bf16_argmax_runs_in_bf16_with_the_same_labels(exported):
    """The backend's BF16 load of the graph's own post-processing (prepost='graph'; the CPU kernels replace it by
    default) marks the post-processing's arg-max to read the band logits in BF16 (the plugin
    otherwise widens them to FP32 first): the compiled TopKs run in BF16, and the labels equal those of the
    unmarked graph compiled the same way, bit for bit (the same BF16 values are compared)."""
    import openvino as ov

    from bisenet_rt.backends.openvino.tune import bf16_argmax, tune_graph

    frame = street_frame(479, 641, seed=12)[None]
    config = {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": 1}
    core = ov.Core()
    labels, precisions = {}, {}
    for marked in (False, True):
        model = core.read_model(str(exported[OV_FORM]))
        tune_graph(model)
        if marked:
            assert bf16_argmax(model)
        compiled = core.compile_model(model, "CPU", config)
        precisions[marked] = _topk_precisions(compiled)
        labels[marked] = compiled.create_infer_request().infer({0: frame})[0]
    assert precisions == {False: {"f32"}, True: {"bf16"}}
    np.testing.assert_array_equal(labels[True], labels[False])
    with Segmenter(exported[OV_FORM], backend="openvino", precision="bf16", cache_dir=None, prepost="graph") as seg:
        assert any("arg-max in BF16" in r for r in seg.backend.rewrites)
        np.testing.assert_array_equal(seg(frame[0]), labels[True][0])
        assert _topk_precisions(seg.backend._compiled) == {"bf16"}


@pytest.mark.skipif(not BF16, reason="this CPU has no BF16 arithmetic (OpenVINO does not report BF16)")
def test_bf16_ir_build_records_bf16(exported, tmp_path):
    from bisenet_rt.builder import BuildConfig, build

    out = build(BuildConfig(precision="bf16", backend="openvino", onnx=exported["fp32"], output=tmp_path / "bf16.xml"))
    with Segmenter(out, cache_dir=None) as seg:
        assert seg.precision is Precision.BF16 and seg.backend.versions()["inference_precision"] == "bf16"
    with Segmenter(out, precision="fp32", cache_dir=None) as seg:  # the IR holds the fp32 graph
        assert seg.backend.versions()["inference_precision"] == "f32"


def test_int8_build_needs_calibration_frames(tmp_path):
    """OpenVINO builds INT8 from the Q/DQ graph the build makes, which needs frames to calibrate on."""
    from bisenet_rt.builder import BuildConfig, build

    with pytest.raises(BuildError, match="--calib"):
        build(BuildConfig(precision="int8", backend="openvino", output=tmp_path / "int8.xml"))


def test_auto_picks_the_measured_cpu_path():
    """On this machine's measured facts (the table of every CPU class is tests/test_choice.py): without TensorRT
    and without a precision asked for, auto builds OpenVINO BF16 where the CPU has BF16 (as OpenVINO reports
    it), else FP32 on the faster FP32 engine; a precision asked for is kept."""
    from bisenet_rt.backends import SPECS
    from bisenet_rt.builder.choice import CPU_FP32_BACKEND, choose_backend, host_facts

    if SPECS["tensorrt"].availability() is None:
        pytest.skip("TensorRT is usable here, so auto picks it")
    facts = host_facts()
    backend, precision, why = choose_backend(facts, "auto")
    expected = ("openvino", Precision.BF16) if BF16 else (CPU_FP32_BACKEND, Precision.FP32)
    assert (backend, precision) == expected and "TensorRT" in why
    assert choose_backend(facts, "auto", "fp32")[:2] == (CPU_FP32_BACKEND, Precision.FP32)
    assert choose_backend(facts, "openvino", "fp32")[:2] == ("openvino", Precision.FP32)
    assert choose_backend(facts, "auto", "fp16")[:2] == ("onnxruntime", Precision.FP16)


@pytest.mark.skipif(not DEMO.is_file(), reason=f"the demo model {DEMO.name} is not there (made by the training task)")
@pytest.mark.skipif(not BF16, reason="this CPU has no BF16 arithmetic (OpenVINO does not report BF16)")
def test_bf16_miou_within_0_3_of_fp32_on_the_demo_model(tmp_path):
    from bisenet_rt.data.cityscapes import label_id_encoding
    from bisenet_rt.graph.export import ExportConfig, export_onnx
    from bisenet_rt.apps.metrics import ConfusionMatrix
    from bisenet_rt.model import load_checkpoint
    from bisenet_rt.data.synth import generate_frame

    model = load_checkpoint(DEMO)
    path = tmp_path / "demo.onnx"
    export_onnx(model, path, ExportConfig(post=OV_POST))  # what 'bisenet-rt build' gives OpenVINO
    lut = label_id_encoding().lut
    frames = [generate_frame(1000, i, size=(1024, 512)) for i in range(4)]
    miou = {}
    for precision in ("fp32", "bf16"):
        confusion = ConfusionMatrix(model.num_classes)
        with Segmenter(path, backend="openvino", precision=precision, cache_dir=None) as seg:
            for image, label_ids in frames:
                confusion.update(seg(image), lut[label_ids])
        miou[precision] = confusion.scores().miou * 100
    assert abs(miou["bf16"] - miou["fp32"]) <= 0.3, miou
