"""INT8 by explicit quantization: Q/DQ nodes in the model graph, the only INT8 route TensorRT 11 keeps.

The plain FP32 graph is quantized with ONNX Runtime's static quantizer, calibrated on frames fed
through the same preprocessing the pipeline graph applies: int8 weights per output channel and int8
activations per tensor, all symmetric (zero points 0, as TensorRT requires). The quantized graph is
then wrapped like any other by `export.pipeline_graph`, so the frame resize, the normalization and the
arg-max post-processing around it stay float, as do the logits: the classifier multiplies int8
activations by int8 weights but outputs float, and their x8 upsample is float.

These choices serve ONNX Runtime's CPU int8 kernels and the accuracy; the rewrites keep the function:
- ReLU is written as LeakyRelu(alpha=0), the same function. With zero-point-0 activations ORT cannot
  fold a ReLU into the QuantizeLinear after it (it does that only for a zero point at the type's
  minimum), and it has no int8 ReLU, so each ReLU would run as dequantize -> float ReLU -> quantize;
  a LeakyRelu between Q/DQ runs as one int8 QLinearLeakyRelu.
- A grouped conv with one input and several output channels per group (the GE blocks' c -> 6c
  expansions) runs in ORT int8 as many tiny matrix products, several times slower than in FP32;
  a Gather repeating each input channel followed by a depthwise conv is the same function and runs
  on ORT's int8 depthwise kernel.
- The 1x1 classifier conv is written as Transpose -> MatMul -> Add(bias) -> Transpose. A quantized
  Conv needs a quantized output in ORT, and int8 logits flip labels; a MatMul with dequantized
  inputs and a float output runs as one int8 MatMulIntegerToFloat. (A float classifier would instead
  convert its 1024-channel input between layouts and to float: about 15% of the INT8 frame time.)
  For OpenVINO (`classifier_conv=True`) it stays the 1x1 Conv, with int8 inputs and its output Q/DQ pair
  taken away, so the logits stay float: OpenVINO runs it as an int8 convolution with a float output and
  keeps the logits planar, where the MatMul's channels-last logits pulled the post-processing into slow
  channels-last kernels once `convert_model` folded the transpose pair away.
- A conv or a residual addition whose output feeds only a ReLU quantizes that output with the ReLU
  output's calibrated range, so the ReLU requantizes exactly and no codes go to the negative values
  it drops (ORT needs those outputs quantized to run them in int8; TensorRT fuses conv, addition and
  ReLU and quantizes after the ReLU anyway).
- The semantic branch's last stage at 1/32 of the frame (`FLOAT_STAGE`, four GE blocks) stays float: its
  activations have the widest outliers of the network (on the first demo model one depthwise conv's
  per-frame maximum had median 8.5 and 90th percentile 57), it holds 2% of the multiply-adds, and ORT ran
  the graph no slower with it float (101 vs 102 ms at 1024x512). Pixels labelled as FP32 on the demo
  model, 200 / 64 calibration frames: 99.24 -> 99.29 / 99.24 -> 99.27 % on 16 train frames, 99.06 ->
  99.14 / 99.14 -> 99.18 % on 12 val frames; 98.98 -> 99.02 % on the 80 val frames (`benchmarks/int8_cpu.py`).
- Every consumer of an activation gets its own QuantizeLinear (`DedicatedQDQPair`): on x86 ORT runs
  int8 convolutions as uint8 x int8 and converts only a QuantizeLinear with a single consumer, so a
  shared one would leave the convolutions after it in float. (The ONNX Runtime backend turns off the
  common-subexpression pass that would merge them again.)
Calibration (frames, ranges and their cache) lives in `graph.calibration`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from ..artifacts import ArtifactInfo, read_metadata
from ..errors import BuildError, ConfigError
from ..families import DEFAULT_FAMILY, Normalization
from ..int8_grid import WeightRange
from ..precision import Precision
from .calibration import (CALIBRATION_METHODS, DEFAULT_METHOD, PERCENTILE, SEMANTIC_BRANCH, SEMANTIC_PERCENTILE,
                          CalibrationFrames, Frame, bounds, calibrate, calibration_cache_path, check_ranges,
                          load_ranges, ort_method, save_ranges)
from .export import ExportConfig, add_facts, pipeline_graph
from ..post_form import PostForm

if TYPE_CHECKING:
    import onnx


__all__ = ["FLOAT_STAGE", "quantize_plain", "quantize_graph"]

_log = logging.getLogger(__name__)

#: The semantic branch's stage at 1/32 of the frame, left float (see the module docstring).
FLOAT_STAGE = f"{SEMANTIC_BRANCH}.S5_4"

#: ... and the prefix of its nodes' names in the exported graph.
_FLOAT_STAGE_NODES = "/" + FLOAT_STAGE.replace(".", "/") + "/"


def _classifier(graph: "onnx.GraphProto") -> tuple["onnx.NodeProto", "onnx.NodeProto"]:
    """The plain graph's classifier (a 1x1 Conv with bias) and the x8 Resize of its logits (the graph output)."""
    producer = {out: node for node in graph.node for out in node.output}
    resize = producer.get(graph.output[0].name)
    conv = producer.get(resize.input[0]) if resize is not None and resize.op_type == "Resize" else None
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    attrs = {a.name: a for a in conv.attribute} if conv is not None else {}
    if (conv is None or conv.op_type != "Conv" or len(conv.input) != 3 or conv.input[2] not in shapes
            or shapes.get(conv.input[1], ())[2:] != (1, 1) or ("group" in attrs and attrs["group"].i != 1)
            or any(v != 1 for v in (attrs["strides"].ints if "strides" in attrs else ()))
            or any(attrs["pads"].ints if "pads" in attrs else ())):
        raise BuildError("unexpected plain graph: its output is not a 1x1 Conv -> Resize; "
                         "export it with 'bisenet-rt export --plain'")
    assert resize is not None  # the classifier Conv was found as the Resize's producer
    return conv, resize


def _prepared(plain: "onnx.ModelProto", classifier_conv: bool = False) -> tuple["onnx.ModelProto", list[str]]:
    """The plain graph in the form ONNX Runtime's int8 CPU kernels run fastest (the same function), and the
    names of the nodes that must stay float.

    Every node is named; ReLU becomes LeakyRelu(alpha=0); a grouped conv with one input and several
    output channels per group (c -> r*c, groups c) becomes a Gather repeating each input channel r
    times and a depthwise conv; the 1x1 classifier conv becomes Transpose -> MatMul -> Add(bias) ->
    Transpose, so it runs as an int8 matrix product with float output (see the module docstring), unless
    `classifier_conv` keeps it a Conv. Kept float: the bias Add and the Transpose after it (the logits), the x8
    Resize of the logits,
    which `export.pipeline_graph` replaces by the post-processing's own channels-last upsample, and the nodes of
    `FLOAT_STAGE`.
    """
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.ModelProto.FromString(plain.SerializeToString())
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    classifier, resize = _classifier(graph)
    nodes = []
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
        if node.op_type == "Relu" and node.domain in ("", "ai.onnx"):
            node.op_type = "LeakyRelu"
            node.attribute.append(helper.make_attribute("alpha", 0.0))
        if node is classifier and not classifier_conv:
            nodes += _classifier_as_matmul(node, inits, graph)
            continue
        group = next((a for a in node.attribute if a.name == "group"), None)
        weight = tuple(inits[node.input[1]].dims) if node.op_type == "Conv" and node.input[1] in inits else None
        if group is not None and group.i > 1 and weight and weight[1] == 1 and weight[0] > group.i:
            repeat = np.repeat(np.arange(group.i, dtype=np.int64), weight[0] // group.i)
            graph.initializer.append(numpy_helper.from_array(repeat, f"{node.name}_channel_repeat"))
            nodes.append(helper.make_node("Gather", [node.input[0], f"{node.name}_channel_repeat"],
                                          [f"{node.name}_repeated"], axis=1, name=f"{node.name}_repeat"))
            node.input[0] = f"{node.name}_repeated"
            group.i = weight[0]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_initializers(graph)  # the classifier's conv weights, when it became a MatMul
    float_stage = [node.name for node in graph.node if node.name.startswith(_FLOAT_STAGE_NODES)]
    if not float_stage:
        raise BuildError(f"unexpected plain graph: no nodes under {_FLOAT_STAGE_NODES}; "
                         "export it with 'bisenet-rt export --plain'")
    if classifier_conv:
        return proto, [resize.name, *float_stage]
    return proto, [f"{classifier.name}_bias", f"{classifier.name}_to_nchw", resize.name, *float_stage]


def _drop_unused_initializers(graph: "onnx.GraphProto") -> None:
    used = {name for node in graph.node for name in node.input}
    for init in [init for init in graph.initializer if init.name not in used]:
        graph.initializer.remove(init)


def _float_logits(qdq: "onnx.ModelProto") -> None:
    """Take away the Q/DQ pair after the classifier Conv, so its logits reach the x8 Resize in float."""
    graph = qdq.graph
    producer = {out: node for node in graph.node for out in node.output}
    resize = producer[graph.output[0].name]
    dequantize = producer[resize.input[0]]
    quantize = producer.get(dequantize.input[0]) if dequantize.op_type == "DequantizeLinear" else None
    if quantize is None or quantize.op_type != "QuantizeLinear" or producer[quantize.input[0]].op_type != "Conv":
        raise BuildError("unexpected quantized graph: the classifier's logits are not one Q/DQ pair after a Conv")
    resize.input[0] = quantize.input[0]
    graph.node.remove(quantize)
    graph.node.remove(dequantize)
    _drop_unused_initializers(graph)  # the pair's scale and zero point


def _classifier_as_matmul(conv: "onnx.NodeProto", inits: dict, graph: "onnx.GraphProto") -> list:
    """N x C x h x w -> (NHWC) MatMul with the C x K weight -> + bias -> N x K x h x w: the 1x1 conv's function."""
    from onnx import helper, numpy_helper

    name = conv.name
    weight = numpy_helper.to_array(inits[conv.input[1]])
    graph.initializer.extend([
        numpy_helper.from_array(np.ascontiguousarray(weight[:, :, 0, 0].T), f"{name}_weight_ck"),
        numpy_helper.from_array(numpy_helper.to_array(inits[conv.input[2]]), f"{name}_bias_k")])
    return [
        helper.make_node("Transpose", [conv.input[0]], [f"{name}_nhwc"], perm=[0, 2, 3, 1], name=f"{name}_to_nhwc"),
        helper.make_node("MatMul", [f"{name}_nhwc", f"{name}_weight_ck"], [f"{name}_product"], name=f"{name}_matmul"),
        helper.make_node("Add", [f"{name}_product", f"{name}_bias_k"], [f"{name}_logits"], name=f"{name}_bias"),
        helper.make_node("Transpose", [f"{name}_logits"], [conv.output[0]], perm=[0, 3, 1, 2], name=f"{name}_to_nchw"),
    ]


def _graph_io(plain: "onnx.ModelProto") -> tuple[tuple[int, int], int]:
    """(model size (w, h), number of classes) from the plain graph's static input and output shapes."""
    if plain.graph.input[0].type.tensor_type.elem_type != 1:  # onnx.TensorProto.FLOAT
        raise BuildError("int8 quantizes the FP32 plain graph; this one is not FP32 (export it with "
                         "'bisenet-rt export --plain' at the default fp32)")
    dims_in = [d.dim_value for d in plain.graph.input[0].type.tensor_type.shape.dim]
    dims_out = [d.dim_value for d in plain.graph.output[0].type.tensor_type.shape.dim]
    if len(dims_in) != 4 or len(dims_out) != 4 or not all(dims_in[1:]) or not dims_out[1]:
        raise BuildError("the plain graph needs static N x 3 x h x w input and N x C x h x w output shapes; "
                         "export it with 'bisenet-rt export --plain'")
    return (dims_in[3], dims_in[2]), dims_out[1]


class _QuantizerAdvice(logging.Filter):
    """Drops onnxruntime.quantization's advisory root-logger records below ERROR; passes everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        path = record.pathname.replace(os.sep, "/")
        return record.levelno >= logging.ERROR or "onnxruntime/quantization/" not in path


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Keep the quantizer's advice ("consider pre-processing", ...) out of the caller's logs while it runs.

    Only records from onnxruntime.quantization are dropped, and only until it returns; the root-logger handler
    its modules add with logging.basicConfig is taken away again (it would print every later record twice). Its histogram
    calibrators also print to stdout; that is left alone here (`bisenet-rt build` sends it to stderr).
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    advice = _QuantizerAdvice()
    root.addFilter(advice)
    try:
        import onnxruntime.quantization  # noqa: F401  (first imported here: its import calls logging.basicConfig)

        yield
    finally:
        root.removeFilter(advice)
        for added in [h for h in root.handlers if h not in handlers]:  # its logging.basicConfig() calls
            root.removeHandler(added)
        root.setLevel(level)


def quantize_plain(plain: "onnx.ModelProto", frames: Sequence[Frame], *, cache_path: str | os.PathLike | None = None,
                   method: str = DEFAULT_METHOD, weights: WeightRange = WeightRange.FULL,
                   progress: bool = True, normalization: Normalization = DEFAULT_FAMILY.normalization,
                   classifier_conv: bool = False) -> "onnx.ModelProto":
    """Insert Q/DQ nodes into a plain FP32 graph, calibrated on `frames` (paths or BGR uint8 arrays).

    With `cache_path`, ranges found there are used instead of calibrating, and fresh ones are saved there.
    `weights` is the weight grid (`WeightRange`); frames are normalized as the weights' family says.
    `classifier_conv` keeps the classifier a Conv with float logits (OpenVINO) instead of a MatMul (ONNX Runtime).
    """
    import onnx

    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    cached = cache_path is not None and Path(cache_path).is_file()
    if not frames and not cached:
        raise BuildError("no calibration frames given; int8 needs at least one (--calib DIR)")
    model_size, _ = _graph_io(plain)
    prepared, keep_float = _prepared(plain, classifier_conv)
    extra: dict[str, Any] = {
        "ActivationSymmetric": True, "WeightSymmetric": True,  # zero points 0: what TensorRT accepts
        "QuantizeBias": False,        # TensorRT takes no int32 DequantizeLinear; ORT quantizes float biases itself
        "DedicatedQDQPair": True,     # see the module docstring
        "OpTypesToExcludeOutputQuantization": ["MatMul"],  # the classifier's logits stay float
    }
    reader = CalibrationFrames(frames, model_size, progress=progress and not cached, normalization=normalization)
    try:
        with tempfile.TemporaryDirectory(prefix="bisenet_rt_int8_") as tmp, _quiet_quantizer():
            from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

            path = Path(cache_path) if cache_path is not None else Path(tmp) / "ranges.json"
            if cached:
                ranges = load_ranges(path, method)
            else:
                ranges = calibrate(prepared, reader, method, Path(tmp))
                check_ranges(bounds(ranges), "the calibration of these frames")
                path = save_ranges(ranges, path, Path(tmp))
            extra["TensorQuantOverrides"] = _relu_ranges_for_producers(prepared, ranges)
            out = Path(tmp) / "qdq.onnx"
            quantize_static(prepared, out, None, extra_options=extra, calibration_cache_path=path,
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, calibrate_method=ort_method(method),
                            nodes_to_exclude=keep_float,
                            reduce_range=WeightRange(weights) is WeightRange.REDUCED)
            qdq = onnx.load(str(out))
            if classifier_conv:
                _float_logits(qdq)
            return qdq
    finally:
        reader.close()


def _relu_ranges_for_producers(prepared: "onnx.ModelProto", ranges: Any) -> dict[str, list[dict[str, Any]]]:
    """Quantizer overrides: a conv or addition feeding only a ReLU quantizes its output on the ReLU output's range.

    The ReLU then requantizes exactly, and no int8 codes go to the negative values it drops. (TensorRT,
    which fuses conv, residual addition and ReLU, also quantizes only after the ReLU.) The ranges are
    the calibrated ones.
    """
    consumers: dict[str, list] = {}
    for node in prepared.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    overrides = {}
    for node in prepared.graph.node:
        after = consumers.get(node.output[0], [])
        relu = after[0] if len(after) == 1 and after[0].op_type == "LeakyRelu" else None
        if node.op_type in ("Conv", "Add") and relu is not None and relu.output[0] in ranges:
            high = np.float32(np.max(np.abs(np.asarray(ranges[relu.output[0]].range_value))))
            overrides[node.output[0]] = [{"rmin": -high, "rmax": high}]
    return overrides


def quantize_graph(plain: "onnx.ModelProto", calib_frames: Sequence[Frame], *, cache_dir: str | os.PathLike | None,
                   model_size: tuple[int, int] | None = None, method: str = DEFAULT_METHOD,
                   post: PostForm = PostForm.RESIZE, weights: WeightRange = WeightRange.FULL,
                   target: str = "CPUs with VNNI or AMX and TensorRT", progress: bool = True,
                   classifier_conv: bool = False) -> "onnx.ModelProto":
    """The INT8 pipeline graph: uint8 frames in, uint8 labels out, with a Q/DQ-quantized model inside.

    `plain` is the FP32 plain graph ('bisenet-rt export --plain', or `export_onnx(..., ExportConfig(plain=True))`):
    its facts (classes, checkpoint family, normalization, source) carry over; a bare graph without them is
    taken to be the default family's. `model_size`, when given, must be the graph's own. `calib_frames` are
    image paths or BGR uint8 arrays. Calibration ranges are cached under `cache_dir` (None: no cache).
    `post` lays out the post-processing for the runtime (`PostForm`); `weights` is the weight grid, chosen
    for the CPU class `target` names (recorded in the quantization facts); `classifier_conv` keeps the classifier
    a Conv (OpenVINO; see the module docstring).
    """
    import onnx
    import onnxruntime as ort

    size, num_classes = _graph_io(plain)
    if model_size is not None and tuple(model_size) != size:
        raise BuildError(f"the plain graph is {size[0]}x{size[1]} but model size "
                         f"{model_size[0]}x{model_size[1]} was asked for; export it again at that size")
    facts = _plain_facts(plain, num_classes)
    n_frames = len(calib_frames)
    cache_path = None
    if cache_dir is not None:
        cache_path = calibration_cache_path(plain, calib_frames, method=method, model_size=size, cache_dir=cache_dir,
                                            variant="classifier_conv" if classifier_conv else "")
        reused = cache_path.is_file()
        _log.info(f"calibration: {'reusing' if reused else 'writing'} {cache_path}")
        if reused:
            calib_frames = []
    normalization = facts.pixel_normalization
    qdq = quantize_plain(plain, calib_frames, cache_path=cache_path, method=method, weights=weights, progress=progress,
                         normalization=normalization, classifier_conv=classifier_conv)
    proto = pipeline_graph(qdq, ExportConfig(model_size=size, post=post), num_classes, normalization)
    quantization = {
        "format": "QDQ", "weights": f"{weights.description} symmetric, per output channel",
        "weight_range": weights.value, "target": target, "activations": "int8 symmetric, per tensor",
        "float": f"preprocessing, {FLOAT_STAGE}, classifier output and bias (logits), logit upsample, arg-max",
        "classifier": "1x1 Conv, int8 in, float out" if classifier_conv else "MatMul, int8 in, float out",
        "calibration": method,
        **({"percentile": PERCENTILE, "semantic_branch_percentile": SEMANTIC_PERCENTILE}
           if method == "percentile" else {}),
        "calibration_frames": n_frames,
        "calibration_cache": cache_path.name if cache_path is not None else None,
        "tool": f"onnxruntime.quantization {ort.__version__}"}
    add_facts(proto, dataclasses.replace(facts, model_size=size, precision=Precision.INT8, normalization=normalization,
                                         post=post, min_size=None, max_size=None, max_batch=None,
                                         quantization=quantization))
    onnx.checker.check_model(proto)
    return proto


def _plain_facts(plain: "onnx.ModelProto", num_classes: int) -> ArtifactInfo:
    """The facts a plain graph carries (its export metadata), or the default family's for a bare one."""
    meta = read_metadata(plain)
    if "classes" not in meta:
        return ArtifactInfo(classes=DEFAULT_FAMILY.class_names(num_classes), family=DEFAULT_FAMILY.name)
    return ArtifactInfo.from_metadata(meta)
