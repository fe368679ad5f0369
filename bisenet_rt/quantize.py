"""INT8 by explicit quantization: Q/DQ nodes in the model graph, the only INT8 route TensorRT 11 keeps.

The plain FP32 graph is quantized with ONNX Runtime's static quantizer, calibrated on frames fed
through the same preprocessing the pipeline graph applies: int8 weights per output channel and int8
activations per tensor, all symmetric (zero points 0, as TensorRT requires). The quantized graph is
then wrapped like any other by `build_pipeline`, so the frame resize, the normalization and the
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
Calibration ranges are cached as JSON under `cache_dir`, keyed by the plain graph, the calibration
frames and the method, and reused by the next build with the same inputs.
"""
from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence, Union

import numpy as np

from .artifacts import load_json, read_metadata
from .errors import BuildError, ConfigError
from .export import PLAIN_INPUT_NAME, ExportConfig, _metadata, build_pipeline
from .families import DEFAULT_FAMILY, Normalization, family_named, family_of
from .prepost import PostForm
from .precision import Precision

if TYPE_CHECKING:
    import onnx
    import torch

    from .host import CpuFeatures

__all__ = ["CALIBRATION_METHODS", "DEFAULT_METHOD", "FLOAT_STAGE", "PERCENTILE", "SEMANTIC_BRANCH",
           "SEMANTIC_PERCENTILE", "WeightRange", "calibration_files", "quantize_plain", "quantize_pipeline",
           "calibration_cache_path", "cpu_fit_warning"]

_log = logging.getLogger(__name__)

#: Calibration methods of onnxruntime.quantization.CalibrationMethod offered here.
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
#: Percentile: on the demo model it kept more pixels equal to FP32 than MinMax or Entropy did
#: (benchmarks/int8_cpu.py --methods compares them).
DEFAULT_METHOD = "percentile"
#: Percentile of |activation| each range ends at. ORT's default, 99.999, lets the few frames with extreme
#: activations (in the synthetic set: those showing the saturated ego-vehicle hood, whose activations reach
#: 7-15x those of a typical frame) set the scale for every frame; below it those outliers clip and the
#: common values keep their resolution.
PERCENTILE = 99.9
#: Percentile for the semantic branch's tensors, whose deep, low-resolution
#: context features lose information when clipped as tightly as the detail branch's, the aggregation's and
#: the head's. Pixels labelled as FP32 labels them on the quantization-aware fine-tuned demo model (64
#: calibration frames; 12 val frames / 16 train frames, 3 of them among those): every range at 99.9: 98.65 % on
#: val; every range at 99.99: 98.85 / 99.01 %; this split: 99.14 / 99.24 %; the semantic branch at 99.95
#: or 99.995 instead, or the rest at 99.7 or 99.95: 98.8-99.0 / 99.0-99.2 %. Before that fine-tune one
#: percentile did best: 99.9 (95.7 % vs 91.7 % at 99.99).
SEMANTIC_PERCENTILE = 99.99
#: The semantic branch's attribute in `bisenet_rt.model.BiSeNetV2`: its modules are named `segment.*`,
#: and the exported graph's nodes and tensors `/segment/*`.
SEMANTIC_BRANCH = "segment"
#: The semantic branch's stage at 1/32 of the frame, left float (see the module docstring).
FLOAT_STAGE = f"{SEMANTIC_BRANCH}.S5_4"
#: ... and the prefix of its nodes' names in the exported graph.
_FLOAT_STAGE_NODES = "/" + FLOAT_STAGE.replace(".", "/") + "/"
#: Bump when the quantization recipe changes, so old calibration caches are not reused.
_RECIPE = f"qdq-s8s8-perchannel-v5-p{PERCENTILE}-s{SEMANTIC_PERCENTILE}"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Frames per calibration pass for the histogram methods, which hold every activation of a pass in memory.
_HISTOGRAM_CHUNK = 4

Frame = Union[str, os.PathLike, np.ndarray]


class WeightRange(str, enum.Enum):
    """The grid int8 weights are rounded to, chosen for the CPU an artifact targets.

    FULL uses all 8 bits ([-127, 127]): exact on CPUs with VNNI or AMX int8 dot products, and on
    TensorRT. REDUCED uses 7 bits ([-64, 63]), ONNX Runtime's advice for CPUs with only AVX2: their
    u8 x s8 kernels (vpmaddubsw) add pairs of products into int16, which saturates for 8-bit weights
    and pushes labels away from FP32; with 7-bit weights no pair can overflow. Both are symmetric
    int8 Q/DQ graphs, so TensorRT builds either.
    """

    FULL = "int8"
    REDUCED = "int7"


_WEIGHT_TEXT = {WeightRange.FULL: "int8", WeightRange.REDUCED: "7-bit int8 ([-64, 63], reduce_range)"}


def cpu_fit_warning(quantization: str | None, cpu: "CpuFeatures", artifact: str) -> str | None:
    """Why an INT8 artifact will lose accuracy on this CPU, or None when it fits.

    `quantization` is the graph's `bisenet_rt.quantization` metadata (JSON; graphs from before the
    weight grid was recorded had 8-bit weights). 8-bit weights on a CPU without VNNI or AMX go
    through saturating int16 pair sums on ONNX Runtime's and OpenVINO's CPU int8 kernels.
    """
    try:
        weights = WeightRange(json.loads(quantization or "{}").get("weight_range", WeightRange.FULL.value))
    except (ValueError, TypeError, AttributeError):
        weights = WeightRange.FULL
    if weights is WeightRange.FULL and not cpu.exact_int8:
        return (f"{artifact} has 8-bit int8 weights, built for CPUs with VNNI or AMX; this CPU ({cpu.label}) sums int8 "
                "products in saturating int16 pairs, so more labels differ from FP32. Rebuild it for this CPU: "
                "'bisenet-rt build --precision int8 --int8-target avx2'")
    return None


def calibration_files(directory: str | os.PathLike | None, count: int) -> list[Path]:
    """Up to `count` image files under `directory` (searched recursively), spread evenly over the sorted set."""
    if directory is None:
        raise BuildError("int8 needs calibration frames: pass --calib DIR, a folder of frames like those the model "
                         "will see (for example the training images)")
    if count < 1:
        raise BuildError(f"--calib-count must be at least 1, got {count}")
    root = Path(directory)
    if not root.is_dir():
        raise BuildError(f"--calib {root}: no such folder; give a folder of calibration frames (.png/.jpg)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise BuildError(f"--calib {root}: no images found (looked for {', '.join(_IMAGE_SUFFIXES)} in it and its "
                         "subfolders); give a folder of calibration frames")
    if len(files) <= count:
        return files
    picks = np.linspace(0, len(files) - 1, count).round().astype(int)
    return [files[i] for i in picks]


class _CalibrationFrames:
    """ONNX Runtime calibration data reader: BGR uint8 frames -> the plain graph's normalized input.

    Frames go through `bisenet_rt.pipeline.preprocess`, the reference of what the pipeline graph does
    before the model, at the graph's model size.
    """

    def __init__(self, frames: Sequence[Frame], model_size: tuple[int, int], *, progress: bool,
                 normalization: Normalization = DEFAULT_FAMILY.normalization) -> None:
        self.frames = list(frames)
        self.model_size = model_size
        self.normalization = normalization
        self.start, self.end = 0, len(self.frames)
        self.index = 0
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=len(self.frames), desc="calibrate", unit="frame", file=sys.stderr)

    def __len__(self) -> int:
        return len(self.frames)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, min(end_index, len(self.frames))
        self.index = self.start

    def get_next(self) -> dict[str, np.ndarray] | None:
        import torch

        from .pipeline import preprocess

        if self.index >= self.end:
            if self.end >= len(self.frames):
                self.close()
            return None
        frame = _read_frame(self.frames[self.index])
        self.index += 1
        if self.bar is not None:
            self.bar.update(1)
        with torch.inference_mode():
            x = preprocess(torch.from_numpy(frame)[None], self.model_size, self.normalization)
        return {PLAIN_INPUT_NAME: x.numpy()}

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _read_frame(frame: Frame) -> np.ndarray:
    """A calibration frame as a contiguous BGR uint8 H x W x 3 array (files read with OpenCV)."""
    if isinstance(frame, np.ndarray):
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise BuildError(f"calibration frames must be uint8 H x W x 3 BGR arrays; got {frame.dtype} {frame.shape}")
        return np.ascontiguousarray(frame)
    from .images import ImageError, read_image

    try:
        return read_image(frame)
    except ImageError as exc:
        raise BuildError(f"calibration frame {exc}; remove it from the --calib folder") from None


def _frame_digest(frame: Frame) -> bytes:
    h = hashlib.sha256()
    if isinstance(frame, np.ndarray):
        h.update(repr((frame.dtype.str, frame.shape)).encode())
        h.update(np.ascontiguousarray(frame).tobytes())
    else:
        path = Path(frame)
        h.update(path.name.encode())
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as exc:
            raise BuildError(f"calibration frame {path}: cannot read it ({exc.strerror})") from None
    return h.digest()


def calibration_cache_path(plain: "onnx.ModelProto", frames: Sequence[Frame], *, method: str,
                           model_size: tuple[int, int], cache_dir: str | os.PathLike) -> Path:
    """Where the calibration ranges of this graph, frame list and method are (or will be) cached."""
    h = hashlib.sha256()
    h.update(f"{_RECIPE}|{method}|{model_size[0]}x{model_size[1]}|".encode())
    h.update(hashlib.sha256(plain.SerializeToString()).digest())
    for frame in frames:
        h.update(_frame_digest(frame))
    return Path(cache_dir) / f"int8_calibration_{h.hexdigest()[:24]}.json"


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


def _prepared(plain: "onnx.ModelProto") -> tuple["onnx.ModelProto", list[str]]:
    """The plain graph in the form ONNX Runtime's int8 CPU kernels run fastest (the same function), and the
    names of the nodes that must stay float.

    Every node is named; ReLU becomes LeakyRelu(alpha=0); a grouped conv with one input and several
    output channels per group (c -> r*c, groups c) becomes a Gather repeating each input channel r
    times and a depthwise conv; the 1x1 classifier conv becomes Transpose -> MatMul -> Add(bias) ->
    Transpose, so it runs as an int8 matrix product with float output (see the module docstring).
    Kept float: the bias Add and the Transpose after it (the logits), the x8 Resize of the logits,
    which `build_pipeline` replaces by the post-processing's own channels-last upsample, and the nodes of
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
        if node is classifier:
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
    used = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in used]  # the classifier's conv weights
    for init in unused:
        graph.initializer.remove(init)
    float_stage = [node.name for node in graph.node if node.name.startswith(_FLOAT_STAGE_NODES)]
    if not float_stage:
        raise BuildError(f"unexpected plain graph: no nodes under {_FLOAT_STAGE_NODES}; "
                         "export it with 'bisenet-rt export --plain'")
    return proto, [f"{classifier.name}_bias", f"{classifier.name}_to_nchw", resize.name, *float_stage]


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

    Only records from onnxruntime.quantization are dropped, and only until it returns. Its histogram
    calibrators also print to stdout; that is left alone here (`bisenet-rt build` sends it to stderr).
    """
    root = logging.getLogger()
    advice = _QuantizerAdvice()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def quantize_plain(plain: "onnx.ModelProto", frames: Sequence[Frame], *, cache_path: str | os.PathLike | None = None,
                   method: str = DEFAULT_METHOD, weights: WeightRange = WeightRange.FULL,
                   progress: bool = True, normalization: Normalization = DEFAULT_FAMILY.normalization
                   ) -> "onnx.ModelProto":
    """Insert Q/DQ nodes into a plain FP32 graph, calibrated on `frames` (paths or BGR uint8 arrays).

    With `cache_path`, ranges found there are used instead of calibrating, and fresh ones are saved there.
    `weights` is the weight grid (`WeightRange`); frames are normalized as the weights' family says.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    cached = cache_path is not None and Path(cache_path).is_file()
    if not frames and not cached:
        raise BuildError("no calibration frames given; int8 needs at least one (--calib DIR)")
    model_size, _ = _graph_io(plain)
    prepared, keep_float = _prepared(plain)
    extra: dict[str, Any] = {
        "ActivationSymmetric": True, "WeightSymmetric": True,  # zero points 0: what TensorRT accepts
        "QuantizeBias": False,        # TensorRT takes no int32 DequantizeLinear; ORT quantizes float biases itself
        "DedicatedQDQPair": True,     # see the module docstring
        "OpTypesToExcludeOutputQuantization": ["MatMul"],  # the classifier's logits stay float
    }
    reader = _CalibrationFrames(frames, model_size, progress=progress and not cached, normalization=normalization)
    try:
        with tempfile.TemporaryDirectory(prefix="bisenet_rt_int8_") as tmp, _quiet_quantizer():
            path = Path(cache_path) if cache_path is not None else Path(tmp) / "ranges.json"
            if cached:
                ranges = _load_ranges(path, method)
            else:
                ranges = _calibrate(prepared, reader, method, Path(tmp))
                check_ranges(_bounds(ranges), "the calibration of these frames")
                path = _save_ranges(ranges, path, Path(tmp))
            extra["TensorQuantOverrides"] = _relu_ranges_for_producers(prepared, ranges)
            out = Path(tmp) / "qdq.onnx"
            quantize_static(prepared, out, None, extra_options=extra, calibration_cache_path=path,
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, calibrate_method=_ort_method(method),
                            nodes_to_exclude=keep_float,
                            reduce_range=WeightRange(weights) is WeightRange.REDUCED)
            return onnx.load(str(out))
    finally:
        reader.close()


def _save_ranges(ranges: Any, path: Path, workdir: Path) -> Path:
    """Save calibration ranges to their cache file; where it cannot be written (a read-only or full cache folder),
    warn and keep them in `workdir` for this build only. Returns where they are."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    from .atomic import replacing

    try:
        with replacing(path) as tmp:
            save_tensors_data(ranges, tmp)
        return path
    except OSError as exc:  # DiskFullError included
        _log.warning(f"calibration ranges not cached in {path.parent} ({getattr(exc, 'strerror', None) or exc}); "
                     "the next build calibrates again")
    fallback = workdir / "ranges.json"
    save_tensors_data(ranges, fallback)
    return fallback


def _ort_method(method: str) -> Any:
    """onnxruntime.quantization.CalibrationMethod for one of CALIBRATION_METHODS."""
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[method]


def _calibrate(prepared: "onnx.ModelProto", reader: _CalibrationFrames, method: str, workdir: Path) -> Any:
    """Ranges (ORT TensorsData) of the tensors the quantizer quantizes, from ORT's calibrator in one pass.

    For `percentile`, the semantic branch's ranges end at SEMANTIC_PERCENTILE and all others at
    PERCENTILE, both read from the same histograms.
    """
    import onnx
    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    model_path = workdir / "prepared.onnx"
    onnx.save(prepared, str(model_path))
    calibrator = create_calibrator(model_path, sorted(set(QDQRegistry) | set(QLinearOpsRegistry)),
                                   augmented_model_path=str(workdir / "augmented.onnx"),
                                   calibrate_method=_ort_method(method),
                                   extra_options={"percentile": PERCENTILE} if method == "percentile" else {})
    chunk = len(reader) if method == "minmax" else _chunk(len(reader))  # histograms hold a chunk's activations
    for start in range(0, len(reader), chunk):
        reader.set_range(start, start + chunk)
        calibrator.collect_data(reader)
    ranges = calibrator.compute_data()
    if method == "percentile":
        calibrator.collector.percentile = SEMANTIC_PERCENTILE
        semantic = calibrator.compute_data()
        for name in ranges.keys():
            if name.startswith(f"/{SEMANTIC_BRANCH}/"):
                ranges[name] = semantic[name]
    return ranges


def _load_ranges(path: Path, method: str) -> Any:
    """Cached calibration ranges, refused if they are not the method's or not readable."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    try:
        load_json(path.read_bytes(), "the calibration cache")  # bounded in size and depth before ORT's reader
        ranges = load_tensors_data(path)
        held = ranges.calibration_method
        bounds = _bounds(ranges)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BuildError(f"calibration cache {path} is unreadable ({exc.__class__.__name__}: {exc}); delete it to "
                         "calibrate again") from None
    if held != _ort_method(method):
        raise BuildError(f"calibration cache {path} holds {getattr(held, 'name', held)} ranges, not {method}; "
                         "delete it to calibrate again")
    check_ranges(bounds, str(path))
    return ranges


#: The largest activation magnitude a calibrated range may claim (normalized inputs keep this network's
#: activations orders of magnitude below it); beyond it a range is corrupt and would round every value to 0.
MAX_RANGE = 1e6


def _bounds(ranges: Any) -> list[np.ndarray]:
    """Each tensor's calibrated (low, high) from ORT TensorsData, as float64 arrays."""
    return [np.asarray(ranges[name].range_value, np.float64) for name in ranges.keys()]


def check_ranges(bounds: Sequence[np.ndarray], where: str) -> None:
    """Refuse calibration ranges that are not finite, not (low, high) pairs, or absurdly wide."""
    for value in bounds:
        if value.size != 2 or not np.all(np.isfinite(value)) or value[0] > value[1]:
            raise BuildError(f"calibration ranges in {where} include {value.tolist()}, not a finite (low, high) "
                             "pair; delete the cache to calibrate again")
        if np.max(np.abs(value)) > MAX_RANGE:
            raise BuildError(f"calibration ranges in {where} include {value.tolist()}, beyond +-{MAX_RANGE:g}; "
                             "the cache is corrupt: delete it to calibrate again")


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


def _chunk(n: int) -> int:
    """The largest divisor of n up to _HISTOGRAM_CHUNK (the quantizer wants equal chunks)."""
    return max(d for d in range(1, min(n, _HISTOGRAM_CHUNK) + 1) if n % d == 0) if n else 1


def quantize_pipeline(model_or_plain: "torch.nn.Module | onnx.ModelProto", calib_frames: Sequence[Frame], *,
                      cache_dir: str | os.PathLike | None, model_size: tuple[int, int] | None = None,
                      method: str = DEFAULT_METHOD, source_sha256: str = "random-init",
                      post: PostForm = PostForm.RESIZE, weights: WeightRange = WeightRange.FULL,
                      target: str = "CPUs with VNNI or AMX and TensorRT", progress: bool = True) -> "onnx.ModelProto":
    """The INT8 pipeline graph: uint8 frames in, uint8 labels out, with a Q/DQ-quantized model inside.

    `model_or_plain` is a BiSeNetV2 module (exported here at `model_size`, default 1024x512) or a
    plain FP32 graph from `export_plain` / 'bisenet-rt export --plain' (its own size is used).
    `calib_frames` are image paths or BGR uint8 arrays. Calibration ranges are cached under
    `cache_dir` (None: no cache). `post` lays out the post-processing for the runtime (`PostForm`);
    `weights` is the weight grid, chosen for the CPU class `target` names (recorded with it). The
    graph carries the export metadata with precision 'int8'.
    """
    import onnx
    import onnxruntime as ort

    from .classes import DEFAULT_MODEL_SIZE
    from .export import export_plain, num_classes_of

    if isinstance(model_or_plain, onnx.ModelProto):
        plain = model_or_plain
        family = family_named(read_metadata(plain).get("family", DEFAULT_FAMILY.name))
        graph_size, num_classes = _graph_io(plain)
        if model_size is not None and tuple(model_size) != graph_size:
            raise BuildError(f"the plain graph is {graph_size[0]}x{graph_size[1]} but model size "
                             f"{model_size[0]}x{model_size[1]} was asked for; export it again at that size")
        size = graph_size
    else:
        size = (model_size[0], model_size[1]) if model_size is not None else DEFAULT_MODEL_SIZE
        plain = export_plain(model_or_plain, size)
        num_classes = num_classes_of(model_or_plain)
        family = family_of(model_or_plain)
    n_frames = len(calib_frames)
    cache_path = None
    if cache_dir is not None:
        cache_path = calibration_cache_path(plain, calib_frames, method=method, model_size=size,
                                            cache_dir=cache_dir)
        reused = cache_path.is_file()
        _log.info(f"calibration: {'reusing' if reused else 'writing'} {cache_path}")
        if reused:
            calib_frames = []
    qdq = quantize_plain(plain, calib_frames, cache_path=cache_path, method=method, weights=weights, progress=progress,
                         normalization=family.normalization)
    config = ExportConfig(model_size=size, post=post)
    proto = build_pipeline(qdq, config, num_classes, family)
    meta = _metadata(config, num_classes, source_sha256, family)
    meta["bisenet_rt.precision"] = Precision.INT8.value
    meta["bisenet_rt.quantization"] = json.dumps({
        "format": "QDQ", "weights": f"{_WEIGHT_TEXT[weights]} symmetric, per output channel",
        "weight_range": weights.value, "target": target, "activations": "int8 symmetric, per tensor",
        "float": f"preprocessing, {FLOAT_STAGE}, classifier output and bias (logits), logit upsample, arg-max",
        "calibration": method,
        **({"percentile": PERCENTILE, "semantic_branch_percentile": SEMANTIC_PERCENTILE}
           if method == "percentile" else {}),
        "calibration_frames": n_frames,
        "calibration_cache": cache_path.name if cache_path is not None else None,
        "tool": f"onnxruntime.quantization {ort.__version__}"})
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    return proto
