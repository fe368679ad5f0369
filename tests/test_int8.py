"""INT8 by explicit quantization: the Q/DQ graph's structure, its int8 kernels on ONNX Runtime, its
agreement with FP32, the calibration cache, and `bisenet-rt build --precision int8`.

The issue's accuracy bar is checked on the demo model (fine-tuned quantization-aware, `bisenet-rt
train --qat`) when it is present, on synthetic frames it never saw: mIoU within 1.0 point of FP32 and
>= 99% of pixels labelled as FP32 labels them. The bars are the same on every CPU class because the
graph is built for the class the tests run on, as `bisenet-rt build` does (`choice.int8_weights`):
8-bit weights where VNNI or AMX sum int8 products exactly, 7-bit weights on AVX2 without VNNI, whose
int16 pair sums saturate with 8-bit weights (benchmarks/int8_isa_emulated.py measures both grids on
both classes). Random weights
(`confident_model`) amplify quantization noise layer after layer (nothing in them is redundant), so on
them INT8 is only required to agree with FP32 far more often than with the labels of another frame.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, REPO, street_frame

SMALL = (512, 256)  # model size for the structure tests (w, h)
DEMO = REPO / "bisenet_rt" / "assets" / "demo_bisenetv2_synth.pth"
#: The pre- and post-processing nodes around the quantized model (named by `bisenet_rt.graph.prepost`).
PREPOST = ("pre/", "post/")


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory) -> Path:
    """Four street-like calibration frames as PNG files."""
    import cv2

    out = tmp_path_factory.mktemp("calib")
    for i in range(4):
        cv2.imwrite(str(out / f"frame_{i}.png"), street_frame(256, 512, seed=100 + i))
    return out


@pytest.fixture(scope="session")
def int8(tmp_path_factory, confident_model, calib_dir):
    """`confident_model` as FP32 and INT8 pipeline graphs at 512x256, and what the INT8 one was made from."""
    import onnx

    from bisenet_rt.graph.export import ExportConfig, export_onnx
    from bisenet_rt.graph.calibration import calibration_files
    from bisenet_rt.graph.qdq import quantize_graph

    out = tmp_path_factory.mktemp("int8")
    fp32 = out / "fp32.onnx"
    export_onnx(confident_model, fp32, ExportConfig(model_size=SMALL))
    frames = calibration_files(calib_dir, 4)
    plain = export_onnx(confident_model, None, ExportConfig(plain=True, model_size=SMALL))
    proto = quantize_graph(plain, frames, cache_dir=out / "cache", model_size=SMALL, progress=False)
    path = out / "int8.onnx"
    onnx.save(proto, str(path))
    return {"fp32": fp32, "int8": path, "proto": proto, "frames": frames, "cache": out / "cache"}


def _graph_maps(proto):
    producer = {o: n for n in proto.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {i.name: i for i in proto.graph.initializer}
    return producer, consumers, inits


def _model_convs(proto):
    """The model's convs (the pre-processing has none: it normalizes with one multiply-add)."""
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert not [n for n in convs if n.name.startswith(PREPOST)]
    return convs


def _n_model_convs(model) -> int:
    """Conv2d layers of the model minus the classifier (which the INT8 graph runs as a MatMul)."""
    return sum(1 for m in model.modules() if m.__class__.__name__ == "Conv2d") - 1


def _n_float_stage_convs(model) -> int:
    """Conv2d layers of the stage the INT8 graph leaves float."""
    from bisenet_rt.graph.qdq import FLOAT_STAGE

    return sum(1 for name, m in model.named_modules()
               if name.startswith(f"{FLOAT_STAGE}.") and m.__class__.__name__ == "Conv2d")


def _in_float_stage(node) -> bool:
    from bisenet_rt.graph.qdq import _FLOAT_STAGE_NODES

    return node.name.startswith(_FLOAT_STAGE_NODES)


def test_metadata_says_int8(int8):
    from bisenet_rt.artifacts import read_metadata
    from bisenet_rt.graph.calibration import DEFAULT_METHOD

    meta = read_metadata(int8["proto"])
    assert meta["precision"] == "int8" and meta["graph"] == "pipeline" and meta["model_size"] == "512x256"
    quant = json.loads(meta["quantization"])
    assert quant["format"] == "QDQ" and quant["calibration"] == DEFAULT_METHOD and quant["calibration_frames"] == 4


def test_qdq_structure_quantizes_the_model_convs(int8, confident_model):
    from onnx import numpy_helper

    proto = int8["proto"]
    producer, consumers, inits = _graph_maps(proto)
    convs = _model_convs(proto)
    assert len(convs) == _n_model_convs(confident_model)
    kept = [conv for conv in convs if _in_float_stage(conv)]
    assert len(kept) == _n_float_stage_convs(confident_model) > 0
    for conv in kept:  # float weights, float output (only the stage's input, from S4, is dequantized int8)
        assert conv.input[1] in inits and inits[conv.input[1]].data_type == 1, conv.name
        assert "QuantizeLinear" not in [c.op_type for c in consumers[conv.output[0]]], conv.name
    for conv in (c for c in convs if not _in_float_stage(c)):
        x, w = producer[conv.input[0]], producer[conv.input[1]]
        assert x.op_type == "DequantizeLinear" and producer[x.input[0]].op_type == "QuantizeLinear", conv.name
        assert w.op_type == "DequantizeLinear" and w.input[0] in inits, conv.name
        weight = numpy_helper.to_array(inits[w.input[0]])
        scale = numpy_helper.to_array(inits[w.input[1]])
        assert weight.dtype == np.int8 and scale.shape == (weight.shape[0],), conv.name  # per output channel
        assert [c.op_type for c in consumers[conv.output[0]]] == ["QuantizeLinear"], conv.name
        if len(conv.input) > 2:
            assert conv.input[2] in inits, "biases stay float: TensorRT takes no int32 DequantizeLinear"


def test_qdq_is_symmetric_int8(int8):
    import onnx
    from onnx import numpy_helper

    proto = int8["proto"]
    _, _, inits = _graph_maps(proto)
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zero_point = inits[node.input[2]]
        assert zero_point.data_type == onnx.TensorProto.INT8, node.name
        assert not numpy_helper.to_array(zero_point).any(), f"{node.name}: zero point must be 0 for TensorRT"
    assert not any(n.op_type == "Relu" for n in proto.graph.node), "ReLU is written as LeakyRelu(alpha=0)"
    leaky = [n for n in proto.graph.node if n.op_type == "LeakyRelu"]
    assert leaky and all(a.f == 0.0 for n in leaky for a in n.attribute if a.name == "alpha")


def test_relu_inputs_use_the_relu_output_range(int8):
    """A conv or residual addition feeding a ReLU is quantized on the ReLU output's grid, not a wider one."""
    from onnx import numpy_helper

    proto = int8["proto"]
    producer, consumers, inits = _graph_maps(proto)
    seen = set()
    for relu in (n for n in proto.graph.node if n.op_type == "LeakyRelu" and not _in_float_stage(n)):
        dq_in = producer[relu.input[0]]
        q_in = producer[dq_in.input[0]]
        source = producer[q_in.input[0]]
        (q_out,) = consumers[relu.output[0]][:1]
        assert dq_in.op_type == "DequantizeLinear" and q_out.op_type == "QuantizeLinear", relu.name
        before = numpy_helper.to_array(inits[q_in.input[1]])
        after = numpy_helper.to_array(inits[q_out.input[1]])
        assert before == pytest.approx(after, rel=1e-6), f"{relu.name} after {source.op_type}"
        seen.add(source.op_type)
    assert seen == {"Conv", "Add"}  # the GE blocks' residual additions as well as the convs


def test_classifier_multiplies_in_int8_with_float_logits(int8):
    from onnx import numpy_helper

    proto = int8["proto"]
    producer, consumers, inits = _graph_maps(proto)
    (matmul,) = [n for n in proto.graph.node if n.op_type == "MatMul"]
    x, w = producer[matmul.input[0]], producer[matmul.input[1]]
    assert x.op_type == "DequantizeLinear" and w.op_type == "DequantizeLinear"
    weight, scale = (numpy_helper.to_array(inits[w.input[i]]) for i in (0, 1))
    assert weight.dtype == np.int8 and scale.shape == (weight.shape[1],)  # per output class
    assert [c.op_type for c in consumers[matmul.output[0]]] == ["Add"]  # bias in float, no QuantizeLinear


def test_pre_and_post_processing_stay_float(int8):
    proto = int8["proto"]
    producer, consumers, _ = _graph_maps(proto)
    logits = [n for n in proto.graph.node
              if n.op_type in ("Add", "Transpose") and n.name.endswith(("_bias", "_to_nchw"))]
    kept = [n for n in proto.graph.node if n.name.startswith(PREPOST)] + logits
    assert len(logits) == 2
    assert {"pre/resize", "post/model_upsample", "post/resize", "post/argmax"} <= {n.name for n in kept}
    for node in kept:
        if node.name == "pre/normalize":  # its output is the model's input, which the first convolutions quantize
            continue
        outputs_quantized = [c.op_type for o in node.output for c in consumers.get(o, [])
                             if c.op_type == "QuantizeLinear"]
        assert not outputs_quantized, f"{node.op_type} {node.name} output is quantized"
        dq_inputs = [i for i in node.input if i in producer and producer[i].op_type == "DequantizeLinear"]
        assert not dq_inputs, f"{node.op_type} {node.name} reads dequantized input"


def test_onnxruntime_runs_the_model_convs_in_int8(int8, confident_model):
    from bisenet_rt.backends.onnxruntime.build import ort_kernel_counts

    kernels = ort_kernel_counts(int8["int8"])
    n_float = _n_float_stage_convs(confident_model)
    assert kernels.get("QLinearConv") == _n_model_convs(confident_model) - n_float
    assert kernels.get("MatMulIntegerToFloat") == 1  # the classifier: int8 product, float logits
    assert kernels.get("Conv", 0) + kernels.get("FusedConv", 0) == n_float  # the float stage's


def test_int8_runs_through_segmenter_and_tracks_fp32(int8):
    from bisenet_rt import Segmenter

    with Segmenter(int8["fp32"]) as fp32, Segmenter(int8["int8"]) as q:
        assert q.precision.value == "int8" and q.backend.name == "onnxruntime"
        frames = [street_frame(256, 512, seed=200), street_frame(300, 520, seed=201), street_frame(256, 512, seed=202)]
        a = [fp32(f) for f in frames]
        b = [q(f) for f in frames]
    for f, labels in zip(frames, b):
        assert labels.shape == f.shape[:2] and labels.dtype == np.uint8
    same = np.mean([np.mean(x == y) for x, y in zip(a, b)])
    other = np.mean([np.mean(a[0] == b[2]), np.mean(a[2] == b[0])])  # same size, different frames
    # Random weights: loose bar (see the module docstring).
    assert same >= 0.45 and same >= 1.5 * other, (same, other)


@pytest.fixture(scope="module")
def demo_eval(tmp_path_factory):
    """FP32 and INT8 of the demo model scored on unseen synthetic frames (calibrated on others)."""
    if not DEMO.is_file():
        pytest.skip(f"the demo model {DEMO.name} is not built yet (training writes it)")
    import onnx

    from bisenet_rt import Segmenter
    from bisenet_rt.builder.choice import host_facts, int8_weights
    from bisenet_rt.data import open_dataset
    from bisenet_rt.apps.evaluate import evaluate
    from bisenet_rt.graph.export import ExportConfig, export_onnx
    from bisenet_rt.model import model_and_sha
    from bisenet_rt.graph.calibration import calibration_files
    from bisenet_rt.graph.qdq import quantize_graph
    from bisenet_rt.data.synth import write_dataset

    out = tmp_path_factory.mktemp("demo_int8")
    # A seed the demo never saw; 12 frames to calibrate on and 12 to score (6 and 6 proved a noisier estimate
    # than the benchmark's 200 calibration and 80 val frames: benchmarks/results/int8_*.json).
    write_dataset(out / "synth", n=24, seed=7, val_fraction=0.5, progress=False)
    model, sha = model_and_sha(DEMO)
    export_onnx(model, out / "fp32.onnx", ExportConfig(), source_sha256=sha)
    calib = calibration_files(out / "synth" / "leftImg8bit" / "train", 12)
    weights, target = int8_weights(host_facts(), "onnxruntime")  # the grid `bisenet-rt build` picks for this CPU
    cache = out / "calibration"  # the ranges of these frames, computed once (tests/data/make_demo_calibration.py)
    shutil.copytree(DATA / "demo_calibration", cache)
    plain = export_onnx(model, None, ExportConfig(plain=True), source_sha256=sha)
    proto = quantize_graph(plain, calib, cache_dir=cache, progress=False, weights=weights, target=target)
    onnx.save(proto, str(out / "int8.onnx"))
    with Segmenter(out / "fp32.onnx") as fp32, Segmenter(out / "int8.onnx") as q:
        return evaluate([fp32, q], open_dataset(out / "synth", "val"), progress=False)


def test_demo_model_int8_miou_within_one_point_of_fp32(demo_eval):
    """The issue's mIoU bar on unseen frames, on every CPU class (the grid fits the class)."""
    fp32, int8 = demo_eval
    assert int8.precision == "int8"
    assert abs(fp32.scores.miou - int8.scores.miou) <= 0.01, (fp32.scores.miou, int8.scores.miou)


def test_demo_model_int8_labels_99_percent_of_pixels_as_fp32(demo_eval):
    """The issue's agreement bar, >= 99% of pixels labelled as FP32 labels them, on every CPU class."""
    _, int8 = demo_eval
    assert int8.agreement >= 0.99, int8.agreement


def _doubled(value):
    """A cached range bound times two, in any of the forms ORT's calibration JSON stores it."""
    if isinstance(value, dict):
        return {**value, "data": _doubled(value["data"])}
    if isinstance(value, list):
        return [2 * v for v in value]
    return 2 * value


def test_calibration_cache_is_reused(int8, confident_model):
    """A second build with the same graph and frames reads the cached ranges instead of calibrating."""
    from onnx import numpy_helper

    from bisenet_rt.graph.export import ExportConfig, export_onnx
    from bisenet_rt.graph.qdq import quantize_graph

    caches = list(int8["cache"].glob("*.json"))
    assert len(caches) == 1
    data = json.loads(caches[0].read_text())
    for end in ("lowest", "highest"):  # double the cached range of the model input
        data["data"]["input"][end] = _doubled(data["data"]["input"][end])
    caches[0].write_text(json.dumps(data))
    plain = export_onnx(confident_model, None, ExportConfig(plain=True, model_size=SMALL))
    again = quantize_graph(plain, int8["frames"], cache_dir=int8["cache"], model_size=SMALL, progress=False)
    assert list(int8["cache"].glob("*.json")) == caches

    def input_scale(proto):
        inits = {i.name: i for i in proto.graph.initializer}
        q = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
        return float(numpy_helper.to_array(inits[q.input[1]]))

    assert input_scale(again) == pytest.approx(2 * input_scale(int8["proto"]), rel=1e-6)


def test_percentile_ranges_follow_the_branch(int8, confident_model, tmp_path):
    """Semantic-branch ranges are ORT's own percentile calibration at SEMANTIC_PERCENTILE, all others at PERCENTILE."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import load_tensors_data

    from bisenet_rt.graph import calibration as C
    from bisenet_rt.graph import qdq as Q
    from bisenet_rt.graph.export import export_plain

    plain = export_plain(confident_model, SMALL)
    Q.quantize_plain(plain, int8["frames"], cache_path=tmp_path / "ours.json", progress=False)
    ours = load_tensors_data(tmp_path / "ours.json")
    prepared, keep = Q._prepared(plain)
    oracle = {}
    for percentile in (C.PERCENTILE, C.SEMANTIC_PERCENTILE):
        with Q._quiet_quantizer():
            quantize_static(onnx.ModelProto.FromString(prepared.SerializeToString()),  # it converts its input
                            tmp_path / "q.onnx", C.CalibrationFrames(int8["frames"], SMALL, progress=False),
                            extra_options={"CalibPercentile": percentile, "ActivationSymmetric": True},
                            calibration_cache_path=tmp_path / f"{percentile}.json", quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=keep)
        oracle[percentile] = load_tensors_data(tmp_path / f"{percentile}.json")
    semantic = [name for name in ours.keys() if name.startswith("/segment/")]
    assert len(semantic) > 40 and len(ours.keys()) - len(semantic) > 40
    for name in ours.keys():
        percentile = C.SEMANTIC_PERCENTILE if name in semantic else C.PERCENTILE
        assert np.allclose(ours[name].range_value, oracle[percentile][name].range_value, rtol=1e-6), name
    wider = [n for n in semantic if oracle[C.SEMANTIC_PERCENTILE][n].range_value[1]
             > oracle[C.PERCENTILE][n].range_value[1]]
    assert len(wider) > len(semantic) // 2  # the two percentiles do differ on this model


def test_bad_calibration_cache_is_refused(int8, confident_model, tmp_path):
    from bisenet_rt.errors import BuildError
    from bisenet_rt.graph.export import export_plain
    from bisenet_rt.graph.qdq import quantize_plain

    plain = export_plain(confident_model, SMALL)
    cache = tmp_path / "ranges.json"
    quantize_plain(plain, int8["frames"][:1], cache_path=cache, method="minmax", progress=False)
    with pytest.raises(BuildError, match="holds MinMax ranges, not percentile; delete it"):
        quantize_plain(plain, int8["frames"], cache_path=cache, progress=False)
    cache.write_text("{not json")
    with pytest.raises(BuildError, match="unreadable .*delete it to calibrate again"):
        quantize_plain(plain, int8["frames"], cache_path=cache, progress=False)


def test_cache_key_follows_the_frames(int8, confident_model):
    from bisenet_rt.graph.export import export_plain
    from bisenet_rt.graph.calibration import calibration_cache_path

    plain = export_plain(confident_model, SMALL)
    key = dict(method="percentile", model_size=SMALL, cache_dir=int8["cache"])
    path = calibration_cache_path(plain, int8["frames"], **key)
    assert calibration_cache_path(plain, int8["frames"], **key) == path
    assert calibration_cache_path(plain, int8["frames"][:3], **key) != path
    assert calibration_cache_path(plain, int8["frames"], **{**key, "method": "minmax"}) != path


def test_calibration_files_errors(tmp_path):
    from bisenet_rt.errors import BuildError
    from bisenet_rt.graph.calibration import calibration_files

    with pytest.raises(BuildError, match="--calib DIR"):
        calibration_files(None, 200)
    with pytest.raises(BuildError, match="no such folder"):
        calibration_files(tmp_path / "missing", 200)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a frame")
    with pytest.raises(BuildError, match="no images found"):
        calibration_files(tmp_path / "empty", 200)
    with pytest.raises(BuildError, match="at least 1"):
        calibration_files(tmp_path, 0)


def test_calibration_files_spread_over_the_folder(tmp_path):
    from bisenet_rt.graph.calibration import calibration_files

    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        for i in range(5):
            (tmp_path / sub / f"{i}.png").write_bytes(b"")
    picked = calibration_files(tmp_path, 3)
    assert [p.relative_to(tmp_path).as_posix() for p in picked] == ["a/0.png", "a/4.png", "b/4.png"]
    assert len(calibration_files(tmp_path, 200)) == 10


def test_build_int8_cli(tmp_path, confident_model, calib_dir, capsys):
    from bisenet_rt import Segmenter
    from bisenet_rt.artifacts import read_sidecar
    from bisenet_rt.builder.choice import host_facts, int8_weights
    from bisenet_rt.cli import main
    from bisenet_rt.graph.export import ExportConfig, export_onnx
    from bisenet_rt.host import cpu_features
    from bisenet_rt.int8_grid import WeightRange

    plain = tmp_path / "plain.onnx"
    export_onnx(confident_model, plain, ExportConfig(model_size=SMALL, plain=True))
    engines = tmp_path / "engines"
    common = ["build", "--precision", "int8", "--backend", "onnxruntime", "--engines-dir", str(engines),
              "--cache-dir", str(tmp_path / "cache")]
    assert main(common + ["--onnx", str(plain), "--calib", str(calib_dir), "--calib-count", "2"]) == 0
    out = engines / "bisenetv2_int8.onnx"
    sidecar = read_sidecar(out)
    assert sidecar["info"]["precision"] == "int8" and sidecar["info"]["model_size"] == "512x256"
    assert sidecar["cpu_conv_kernels"]["QLinearConv"] > 0 and sidecar["info"]["quantization"]["calibration_frames"] == 2
    assert len(list((tmp_path / "cache" / "calibration").glob("*.json"))) == 1
    expected, target = int8_weights(host_facts(), "onnxruntime")  # auto: the grid for this CPU's class
    quantization = sidecar["info"]["quantization"]
    assert (quantization["weight_range"], quantization["target"]) == (expected.value, target)
    assert f"{expected.value} weights, for {target}" in capsys.readouterr().err
    with Segmenter(out) as seg:
        assert seg.precision.value == "int8" and seg(street_frame(256, 512, seed=5)).shape == (256, 512)
        assert seg.backend.fit_warning is None  # built for this CPU, so it fits it

    # an explicit target is kept, and recorded; 8-bit weights on a CPU without VNNI or AMX warn at load
    vnni = tmp_path / "vnni.onnx"
    assert main(common + ["--onnx", str(plain), "--calib", str(calib_dir), "--calib-count", "2", "--int8-target",
                          "vnni", "-o", str(vnni)]) == 0
    assert read_sidecar(vnni)["info"]["quantization"]["weight_range"] == WeightRange.FULL.value
    with Segmenter(vnni) as seg:
        assert (seg.backend.fit_warning is None) == cpu_features().exact_int8, seg.backend.fit_warning

    # an int8 pipeline graph is taken as it is: no calibration frames needed
    assert main(common + ["--onnx", str(out), "-o", str(tmp_path / "copy.onnx")]) == 0
    assert read_sidecar(tmp_path / "copy.onnx")["info"]["precision"] == "int8"


@pytest.mark.parametrize("calib", [None, "missing", "empty"])
def test_build_int8_bad_calib(tmp_path, calib, capsys):
    from bisenet_rt.cli import main

    (tmp_path / "empty").mkdir()
    args = ["build", "--precision", "int8", "--backend", "onnxruntime", "--engines-dir", str(tmp_path / "engines"),
            "--model-size", "512x256"]
    if calib is not None:
        args += ["--calib", str(tmp_path / calib)]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bisenet-rt build: error:") and "--calib" in err[-1], err
    assert not any("Traceback" in line for line in err)
    assert not (tmp_path / "engines" / "bisenetv2_int8.onnx").exists()


def test_build_int8_refuses_a_float_pipeline(int8, calib_dir, tmp_path, capsys):
    from bisenet_rt.cli import main

    args = ["build", "--precision", "int8", "--backend", "onnxruntime", "--onnx", str(int8["fp32"]),
            "--calib", str(calib_dir), "--engines-dir", str(tmp_path)]
    assert main(args) == 1
    assert "plain" in capsys.readouterr().err


def test_graph_rewrites_for_int8_kernels_keep_the_function(confident_model):
    """ReLU as LeakyRelu(0), expanding grouped convs as Gather + depthwise, the classifier as MatMul: same logits."""
    import onnxruntime as ort
    import torch

    from bisenet_rt.graph.export import export_plain
    from bisenet_rt.model.reference import preprocess
    from bisenet_rt.graph.qdq import _prepared

    plain = export_plain(confident_model, SMALL)
    prepared, keep_float = _prepared(plain)
    ops = [n.op_type for n in prepared.graph.node]
    assert "Relu" not in ops and ops.count("Gather") == 8  # one per GE-block expansion
    assert ops.count("MatMul") == 1  # the classifier
    stage = [n.name for n in prepared.graph.node if _in_float_stage(n)]
    assert stage and keep_float[3:] == stage  # after the classifier's bias, transpose and upsample: the float stage
    x = preprocess(torch.from_numpy(street_frame(256, 512, seed=9))[None], SMALL).numpy()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    a, b = (ort.InferenceSession(p.SerializeToString(), so, providers=["CPUExecutionProvider"])
            .run(None, {"input": x})[0] for p in (plain, prepared))
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def test_plain_graph_without_the_float_stage_is_refused(confident_model):
    """A graph whose nodes are not named as `export_plain` names them cannot be told where to stay float."""
    from bisenet_rt.errors import BuildError
    from bisenet_rt.graph.export import export_plain
    from bisenet_rt.graph.qdq import _prepared

    plain = export_plain(confident_model, SMALL)
    for node in plain.graph.node:
        node.name = node.name.replace("/segment/", "/other/")
    with pytest.raises(BuildError, match="no nodes under /segment/S5_4/"):
        _prepared(plain)


def test_build_int8_routes_the_qdq_graph_to_openvino(int8, tmp_path):
    """Other backends build from the same Q/DQ graph (OpenVINO here; TensorRT needs a GPU)."""
    from bisenet_rt.backends import SPECS

    missing = SPECS["openvino"].availability()
    if missing:
        pytest.skip(f"OpenVINO cannot run here: {missing}")
    from bisenet_rt import Segmenter
    from bisenet_rt.cli import main

    out = tmp_path / "int8.xml"
    assert main(["build", "--precision", "int8", "--backend", "openvino", "--onnx", str(int8["int8"]),
                 "-o", str(out), "--engines-dir", str(tmp_path)]) == 0
    frame = street_frame(256, 512, seed=11)
    with Segmenter(out) as ov, Segmenter(int8["int8"]) as ort_int8:
        assert ov.precision.value == "int8"
        assert np.mean(ov(frame) == ort_int8(frame)) >= 0.45  # both int8; random weights (see module docstring)


@pytest.fixture(scope="module")
def openvino_int8(tmp_path_factory, confident_model, calib_dir):
    """`confident_model` quantized as 'bisenet-rt build --backend openvino --precision int8' makes it (the form its
    spec names), with the FP32 graph in the same post-processing form."""
    import onnx

    from bisenet_rt.backends import SPECS
    from bisenet_rt.graph.calibration import calibration_files
    from bisenet_rt.graph.export import ExportConfig, export_onnx
    from bisenet_rt.graph.qdq import quantize_graph
    from bisenet_rt.precision import Precision

    out = tmp_path_factory.mktemp("ov_int8")
    form = SPECS["openvino"].graph_form(Precision.INT8)
    plain = export_onnx(confident_model, None, ExportConfig(plain=True, model_size=SMALL))
    graphs = {"fp32": out / "fp32.onnx"}
    export_onnx(confident_model, graphs["fp32"], ExportConfig(model_size=SMALL, post=form.post))
    for name, conv in (("int8", form.classifier_conv), ("int8_matmul", not form.classifier_conv)):
        proto = quantize_graph(plain, calibration_files(calib_dir, 2), cache_dir=out / "cache", model_size=SMALL,
                               post=form.post, classifier_conv=conv, progress=False)
        graphs[name] = out / f"{name}.onnx"
        onnx.save(proto, str(graphs[name]))
    return graphs


def test_openvino_int8_classifier_is_an_int8_conv_with_float_logits(openvino_int8):
    """For OpenVINO the classifier stays a 1x1 Conv: int8 inputs, and its logits go to the post-processing in float
    (no Q/DQ pair after it, no MatMul and no transpose pair whose folding left them channels-last)."""
    import onnx

    proto = onnx.load(str(openvino_int8["int8"]))
    producer, consumers, _ = _graph_maps(proto)
    model = [n for n in proto.graph.node if not n.name.startswith(PREPOST)]
    assert not [n.name for n in model if n.op_type in ("MatMul", "Transpose")]
    (upsample,) = [n for n in proto.graph.node if n.name == "post/rows_model_upsample"]
    classifier = producer[upsample.input[0]]
    assert classifier.op_type == "Conv"
    assert [producer[i].op_type for i in classifier.input[:2]] == ["DequantizeLinear", "DequantizeLinear"]
    assert [c.op_type for c in consumers[classifier.output[0]]] == ["Resize"]
    quantization = json.loads({p.key: p.value for p in proto.metadata_props}["bisenet_rt.quantization"])
    assert quantization["classifier"].startswith("1x1 Conv")


def _compiled_layouts(path: Path) -> tuple[dict[str, str], list[str]]:
    """OpenVINO CPU's compiled graph of `path` (tuned as the backend tunes it): the memory layout of each
    post-processing node's output, and the Transposes it runs in the model (named as the export names model nodes,
    '/head/...'; `tune_graph`'s own around the frame resize are not the model's)."""
    import openvino as ov

    from bisenet_rt.backends.openvino.tune import tune_graph

    core = ov.Core()
    model = core.read_model(str(path))
    tune_graph(model)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    layouts, transposes = {}, []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind, name = info["layerType"].astype(str), op.get_friendly_name()
        if name.startswith("post/") and kind not in ("Const", "Constant"):
            layouts[name] = info["outputLayouts"].astype(str)
        elif kind == "Transpose" and name.startswith("/"):
            transposes.append(name)
    return layouts, transposes


def test_openvino_int8_post_processing_runs_in_the_fp32_layouts(openvino_int8):
    """The INT8 artifact's post-processing runs in the memory layouts OpenVINO gives the FP32 artifact's (planar
    logits), with no transposes of the logits or the head's activations in the model. The MatMul classifier (ONNX
    Runtime's form) fails this check, so it can fail."""
    from bisenet_rt.backends import SPECS

    missing = SPECS["openvino"].availability()
    if missing:
        pytest.skip(f"OpenVINO cannot run here: {missing}")
    fp32, _ = _compiled_layouts(openvino_int8["fp32"])
    int8, transposes = _compiled_layouts(openvino_int8["int8"])
    assert not transposes
    assert fp32 and {k: v for k, v in int8.items() if k in fp32} == fp32
    matmul, matmul_transposes = _compiled_layouts(openvino_int8["int8_matmul"])
    # the check sees what the issue found: the classifier's transpose pair, or channels-last logits
    assert matmul_transposes or {k: v for k, v in matmul.items() if k in fp32} != fp32


@pytest.mark.parametrize("bar,kept", [(0.0, True), (1.0 + 1e-9, False)], ids=["bar-holds", "bar-fails"])
def test_auto_build_with_calibration_frames_checks_int8_against_fp32(bar, kept, checkpoint, calib_dir, tmp_path,
                                                                      monkeypatch, caplog):
    """With calibration frames and no precision, auto builds INT8 where the CPU sums int8 products exactly,
    holds its labels to the FP32 reference on calibration frames, records that in the sidecar, and builds the
    float choice instead (removing the INT8 artifact) when the bar fails. Elsewhere it builds float and says why."""
    import logging

    from bisenet_rt.artifacts import read_sidecar
    from bisenet_rt.builder import BuildConfig, build, choice

    facts = choice.host_facts()
    monkeypatch.setattr(choice, "AUTO_INT8_AGREEMENT", bar)
    config = BuildConfig(weights=checkpoint, calib=calib_dir, calib_count=2, model_size=SMALL,
                         engines_dir=tmp_path / "engines", cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="bisenet_rt"):
        path = build(config)
    sidecar = read_sidecar(path)
    if not facts.cpu.exact_int8:
        assert sidecar["info"]["precision"] != "int8" and "INT8 not chosen" in caplog.text
        return
    float_backend, float_precision, _ = choice.choose_backend(facts, "auto")
    assert "INT8 labels agree with the FP32 reference on" in caplog.text
    if kept:
        assert path.name.startswith("bisenetv2_int8") and sidecar["info"]["precision"] == "int8"
        check = sidecar["auto_int8_check"]
        assert 0.0 <= check["agreement_with_fp32"] <= 1.0 and check["frames"] == 4
    else:
        assert (sidecar["backend"], sidecar["info"]["precision"]) == (float_backend, float_precision.value)
        left = [p.name for p in path.parent.glob("bisenetv2_int8*") if not p.name.endswith(".src.onnx")]
        assert "instead" in caplog.text and not left  # the artifact and its sidecar; the source graph stays


def test_auto_build_reuses_the_int8_artifact_it_checked(confident_model, checkpoint, calib_dir, tmp_path,
                                                         monkeypatch, caplog):
    """Without calibration frames, auto reuses the INT8 artifact an earlier auto build made and checked (same
    checkpoint and model size, its recorded agreement at the bar) and makes it the newest artifact; it does not
    where the weights differ or the recorded agreement is below today's bar."""
    import dataclasses
    import logging
    import os

    from bisenet_rt.artifacts import newest_artifact
    from bisenet_rt.builder import BuildConfig, build, choice
    from bisenet_rt.builder.reuse import checked_int8
    from bisenet_rt.model import save_checkpoint

    facts = choice.host_facts()
    if choice.choose_backend(facts, "auto", None, calibrated=True)[1].value != "int8":
        pytest.skip("auto builds no INT8 on this machine (no VNNI or AMX, or no INT8 CPU engine installed)")
    monkeypatch.setattr(choice, "AUTO_INT8_AGREEMENT", 0.0)
    engines = tmp_path / "engines"
    config = BuildConfig(weights=checkpoint, calib=calib_dir, calib_count=2, model_size=SMALL, engines_dir=engines,
                         cache_dir=tmp_path / "cache")
    int8 = build(config)
    assert json.loads(int8.with_name(int8.name + ".json").read_text())["info"]["precision"] == "int8"
    (engines / "older_float.onnx").write_bytes(b"")  # a newer file than the INT8 artifact, until it is reused
    os.utime(int8, (1, 1))
    again = dataclasses.replace(config, calib=None)
    with caplog.at_level(logging.INFO, logger="bisenet_rt"):
        assert build(again) == int8
    assert "reusing" in caplog.text and newest_artifact(engines) == int8

    changed = tmp_path / "other.pth"
    save_checkpoint(confident_model, changed)
    changed.write_bytes(changed.read_bytes() + b"\0")  # other bytes: another checkpoint as far as its hash goes
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bisenet_rt"):
        assert checked_int8(dataclasses.replace(again, weights=changed), facts) is None
        assert "other weights" in caplog.text
        monkeypatch.setattr(choice, "AUTO_INT8_AGREEMENT", 1.0 + 1e-9)
        assert checked_int8(again, facts) is None
        assert "below the" in caplog.text


def test_auto_int8_needs_weights_to_check_against(calib_dir, tmp_path):
    """Calibration frames with random weights (no --weights) or a given graph (--onnx) do not make auto pick INT8:
    there is no fixed FP32 model to hold it to."""
    from bisenet_rt.builder import BuildConfig, plan_build
    from bisenet_rt.precision import Precision

    for config in (BuildConfig(calib=calib_dir, engines_dir=tmp_path),
                   BuildConfig(calib=calib_dir, engines_dir=tmp_path, onnx=tmp_path / "given.onnx")):
        plan = plan_build(config)
        assert plan.precision is not Precision.INT8 and plan.fallback is None
