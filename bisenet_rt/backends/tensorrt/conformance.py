"""Will TensorRT's ONNX parser take this graph? A static check of its rules that runs without TensorRT.

TensorRT cannot be installed where this project is built and tested, so every graph handed to the
TensorRT builder is checked here first, against rules read from the parser's own source
(onnx/onnx-tensorrt, `ModelImporter.cpp`, `onnxOpImporters.cpp`, `importerUtils.cpp` and
`docs/operators.md` of release 10.1-GA, and the later `ModelImporter.cpp` that carries the 10.x/11.x
UINT8 rule with its DLA-only exceptions) and from TensorRT's own type documentation. Where releases
differ, the rule is the strictest one, so a graph that passes holds on TensorRT 10.x and 11.x.
Two rules are this project's policy, not the parser's, and say so: static shapes (no shape may
depend on a tensor's values, so the cost does not depend on the frame and the engine can be
captured in a CUDA graph) and named nodes (so an error names the node).

A rule encodes what the parser checks, for every op in its table, not what our graph happens to
contain; an op outside the table is reported, never waved through.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Iterable

from ...errors import BuildError

if TYPE_CHECKING:
    import onnx

__all__ = ["Rule", "Violation", "RULES", "SUPPORTED_TYPES", "check_tensorrt", "require_tensorrt"]

_PARSER = "onnx-tensorrt release/10.1-GA"
_BOTH = "10.x, 11.x"


@dataclasses.dataclass(frozen=True)
class Rule:
    """One rule: what it requires, where it comes from, which TensorRT releases it covers."""

    name: str
    requires: str
    source: str
    versions: str = _BOTH
    policy: bool = False  # this project's rule, not the parser's

    def __str__(self) -> str:
        return f"{self.name}, {'bisenet-rt policy' if self.policy else 'TensorRT ' + self.versions}"


_RULE_LIST = (
    Rule("uint8-io-only", "a UINT8 tensor is a network input or output, never an intermediate",
         f"{_PARSER} ModelImporter.cpp parseNode ('TensorRT does not support UINT8 types for intermediate tensors'); "
         "later releases keep it, excepting only Constant and, with the DLA-only kIMPORT_UINT8_QUANTIZATION flag, "
         "QuantizeLinear/Gather"),
    Rule("uint8-read-by-cast", "a UINT8 tensor is read only by a Cast to FLOAT or FLOAT16",
         "TensorRT Python API DataType.UINT8 ('convert uint8 network-level inputs to {float32, float16} prior to use "
         f"with other TensorRT layers'); {_PARSER} notInvalidType(..., 'UINT8') in the Gather, Concat, Slice, Pad, "
         "Resize, ArgMax/ArgMin, TopK, reduction and scatter importers; docs/operators.md lists UINT8 for Cast only"),
    Rule("uint8-cast-float", "a Cast into or out of UINT8 converts from or to FLOAT or FLOAT16",
         "TensorRT Python API DataType.UINT8 ('uint8 conversions are only supported for {float32, float16}')"),
    Rule("op-supported", "the op has an importer in the parser",
         f"{_PARSER} docs/operators.md (Supported = Y) and onnxOpImporters.cpp"),
    Rule("op-types", "each data input has a type the op supports",
         f"{_PARSER} docs/operators.md 'Supported Types' column"),
    Rule("unknown-type", "every tensor's type is known (ONNX shape inference finds it)",
         "the type rules above cannot be checked on an untyped tensor", policy=True),
    Rule("cast-target", "a Cast converts to a type TensorRT has",
         f"{_PARSER} onnxOpImporters.cpp Cast ('Unsupported cast!' from convertDtype)"),
    Rule("qdq-zero-point", "QuantizeLinear/DequantizeLinear have an INT8 zero point that is all zeros (symmetric)",
         f"{_PARSER} onnxOpImporters.cpp QuantDequantLinearHelper ('TensorRT only supports symmetric quantization'; "
         "a UINT8 zero point is replaced by INT8 with a warning, which changes a non-zero point's meaning)"),
    Rule("qdq-scale", "the Q/DQ scale is a constant of static shape, all positive, one per channel along `axis`",
         f"{_PARSER} onnxOpImporters.cpp QuantDequantLinearHelper ('Scale coefficients must all be positive', "
         "'Dynamic shape for scale tensor is not supported', 'The number of scales is not equal to the number of "
         "output channels')"),
    Rule("resize-attributes", "Resize uses a supported mode, coordinate transformation and nearest mode, no antialias",
         f"{_PARSER} onnxOpImporters.cpp Resize ('Unsupported coordinate transformation mode'); docs/operators.md "
         "Resize restrictions (antialiasing not supported, aspect ratio policy 'stretch')"),
    Rule("resize-linear-axes", "a linear Resize with constant scales resizes only the innermost 3 dimensions",
         f"{_PARSER} onnxOpImporters.cpp Resize -> importerUtils.cpp canUseNDResize ('This version of TensorRT only "
         "supports linear resizing on the outermost 3 dimensions')"),
    Rule("constant-axes", "the `axes` input of Slice, Squeeze, Unsqueeze, Pad and reductions is an initializer",
         f"{_PARSER} docs/operators.md restrictions ('`axes` must be an initializer')"),
    Rule("pool-rank", "pooling is 2-D or 3-D, dilations empty or all ones, MaxPool without its Indices output",
         f"{_PARSER} docs/operators.md AveragePool/MaxPool restrictions"),
    Rule("topk-k", "TopK's K is an initializer below 3840 and `sorted` is 1",
         f"{_PARSER} docs/operators.md TopK restrictions"),
    Rule("batchnorm-1d", "BatchNormalization's scale, bias, mean and var are 1-D",
         f"{_PARSER} onnxOpImporters.cpp BatchNormalization ('The shape of the scale input must be (C, )')"),
    Rule("constant-value", "a Constant holds a dense `value` (no sparse_value, value_string(s))",
         f"{_PARSER} docs/operators.md Constant restrictions"),
    Rule("static-shapes", "no shape depends on a tensor's values: no NonZero/Unique/Compress/NonMaxSuppression or "
         "control flow, and every shape input (Reshape shape, Resize sizes/scales, Slice bounds, ...) is computed "
         "from constants and tensor shapes only",
         "data-dependent shapes make TensorRT size outputs at run time: execute_async_v3 waits for the host, CUDA "
         "graph capture fails (Torch-TensorRT CUDA graphs: 'not compatible with ... data-dependent shapes (DDS ops "
         "such as nonzero)'; TensorRT-RTX 1.2 notes), and the cost follows the frame's content", policy=True),
    Rule("named-nodes", "every node has a name, unique in the graph",
         "the parser reports errors as node_name(); an unnamed node reads 'node 174 (, Gather)'", policy=True),
)
#: The rules by name.
RULES: dict[str, Rule] = {rule.name: rule for rule in _RULE_LIST}

_FLOATS = frozenset({"FLOAT", "FLOAT16", "BFLOAT16"})
_NUMBERS = _FLOATS | {"INT32", "INT64"}
_ANY = _NUMBERS | {"BOOL"}
_OPS_BY_TYPES: tuple[tuple[frozenset[str], str], ...] = (
    (_FLOATS, "Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv ConvTranspose Cos "
              "Cosh CumSum Dropout Einsum Elu Erf Exp Floor Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool "
              "GroupNormalization GRU HardSigmoid HardSwish Hardmax ImageScaler InstanceNormalization IsInf "
              "LayerNormalization LeakyRelu Log LogSoftmax LRN LSTM LpNormalization LpPool MatMul MaxPool "
              "MeanVarianceNormalization ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike "
              "RandomUniform RandomUniformLike Reciprocal Resize RNN Round ScaledTanh Scan Selu Sigmoid Sin Sinh "
              "Softmax Softplus Softsign Sqrt Tan Tanh ThresholdedRelu Upsample"),
    (_NUMBERS, "Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual Max Min Mod "
               "Mul Neg Pad Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin "
               "ReduceProd ReduceSum ReduceSumSquare Relu Scatter ScatterElements ScatterND Shrink Sign SpaceToDepth "
               "Sub Sum TopK"),
    (_ANY, "Concat Constant ConstantOfShape Expand EyeLike Flatten Gather GatherElements GatherND Identity If Loop OneHot "
           "Reshape ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu Unsqueeze Where"),
    (frozenset({"FLOAT", "FLOAT16"}), "DeformConv GridSample Mish NonMaxSuppression NonZero RoiAlign"),
    (frozenset({"BOOL"}), "And Not Or Xor"),
    (_ANY | {"UINT8"}, "Cast CastLike"),
    (frozenset({"INT8", "FLOAT8E4M3FN", "INT4"}), "DequantizeLinear"),
    (_NUMBERS | {"INT8"}, "Gelu"),
    (_NUMBERS | {"FLOAT8E4M3FN"}, "Mean"),
)
#: op -> the types its data inputs may have: the 'Supported Types' of docs/operators.md (release/10.1-GA).
SUPPORTED_TYPES: dict[str, frozenset[str]] = {op: types for types, ops in _OPS_BY_TYPES for op in ops.split()}

#: Inputs that are parameters, not data (indices, shapes, axes, scales): not subject to the op's data types.
_PARAMETER_INPUTS: dict[str, frozenset[int]] = {
    "Reshape": frozenset({1}), "Expand": frozenset({1}), "Tile": frozenset({1}), "Slice": frozenset({1, 2, 3, 4}),
    "Resize": frozenset({1, 2, 3}), "Upsample": frozenset({1}), "Gather": frozenset({1}),
    "GatherElements": frozenset({1}), "GatherND": frozenset({1}), "ScatterND": frozenset({1}),
    "ScatterElements": frozenset({1}), "Scatter": frozenset({1}), "Pad": frozenset({1, 2, 3}), "TopK": frozenset({1}),
    "Squeeze": frozenset({1}), "Unsqueeze": frozenset({1}), "Split": frozenset({1}), "CumSum": frozenset({1}),
    "QuantizeLinear": frozenset({1, 2}), "DequantizeLinear": frozenset({1, 2}), "ConstantOfShape": frozenset({0}),
    "OneHot": frozenset({1}), "Where": frozenset({0}),
    **{op: frozenset({1}) for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                                     "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")},
}
#: Inputs that set an output's shape (they must not depend on tensor values).
_SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Resize": (2, 3), "Upsample": (1,),
    "Pad": (1, 3), "ConstantOfShape": (0,), "Range": (0, 1, 2), "TopK": (1,), "OneHot": (1,), "Split": (1,),
    "Squeeze": (1,), "Unsqueeze": (1,),
    **{op: (1,) for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                           "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")},
}
#: Ops whose output shapes follow their input values, or that branch on them.
_DATA_DEPENDENT = frozenset({"NonZero", "Unique", "Compress", "NonMaxSuppression", "If", "Loop", "Scan"})
_AXES_INPUT = {"Slice": 3, "Squeeze": 1, "Unsqueeze": 1, "Pad": 3,
               **{op: 1 for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                                   "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")}}
_RESIZE_MODES = {"nearest", "linear", "cubic"}
_RESIZE_TRANSFORMS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_NEAREST_MODES = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_UINT8_CASTS = {"FLOAT", "FLOAT16"}


@dataclasses.dataclass(frozen=True)
class Violation:
    """One place the graph breaks a rule: the node, its op, the dtype concerned, the rule and what was found."""

    node: str
    op: str
    dtype: str
    rule: Rule
    detail: str

    def __str__(self) -> str:
        return f"node '{self.node}' ({self.op}, {self.dtype}): {self.detail} [rule {self.rule}]"


class _Graph:
    """The facts the rules read: tensor types, constants, producers, which tensors are shape-derived."""

    def __init__(self, model: "onnx.ModelProto") -> None:
        import onnx
        from onnx import numpy_helper

        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        except Exception:  # noqa: BLE001  (onnx raises several types; the type rule then reports the gaps)
            inferred = model
        graph = inferred.graph
        self.graph = graph
        self.types: dict[str, str] = {}
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            elem = value.type.tensor_type.elem_type
            if elem:
                self.types[value.name] = onnx.TensorProto.DataType.Name(elem)
        self.constants: dict[str, Any] = {}
        for init in graph.initializer:
            self.types[init.name] = onnx.TensorProto.DataType.Name(init.data_type)
            self.constants[init.name] = numpy_helper.to_array(init)
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        self.constants[node.output[0]] = numpy_helper.to_array(attr.t)
                        self.types[node.output[0]] = onnx.TensorProto.DataType.Name(attr.t.data_type)
        self.inputs = {i.name for i in graph.input}
        self.outputs = {o.name for o in graph.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.shape_derived = self._shape_derived()

    def _shape_derived(self) -> set[str]:
        """Tensors computed from constants and tensor shapes only (never from tensor values)."""
        derived = set(self.constants)
        changed = True
        while changed:
            changed = False
            for node in self.graph.node:
                if node.op_type in _DATA_DEPENDENT or all(o in derived for o in node.output):
                    continue
                inputs = [i for i in node.input if i]
                if node.op_type in ("Shape", "Size") or (inputs and all(i in derived for i in inputs)):
                    derived.update(node.output)
                    changed = True
        return derived

    def dtype(self, name: str) -> str:
        return self.types.get(name, "?")


def _attrs(node: "onnx.NodeProto") -> dict[str, Any]:
    from onnx import helper

    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _cast_target(node: "onnx.NodeProto") -> str:
    import onnx

    to = _attrs(node).get("to")
    return onnx.TensorProto.DataType.Name(to) if isinstance(to, int) and to in onnx.TensorProto.DataType.values() else "?"


def _check_node(g: _Graph, node: "onnx.NodeProto", name: str) -> Iterable[Violation]:
    """Every rule that concerns one node."""
    op = node.op_type
    first = g.dtype(node.input[0]) if node.input and node.input[0] else "-"

    def bad(rule: str, detail: str, dtype: str = first) -> Violation:
        return Violation(name, op, dtype, RULES[rule], detail)

    if node.domain not in ("", "ai.onnx") or op not in SUPPORTED_TYPES:
        yield bad("op-supported", f"op {node.domain + '.' if node.domain else ''}{op} has no importer in TensorRT's "
                                  "ONNX parser (or is not in this check's table yet)")
        return
    if op in _DATA_DEPENDENT:
        yield bad("static-shapes", f"{op} makes output shapes depend on tensor values")
    params = _PARAMETER_INPUTS.get(op, frozenset())
    for i, tensor in enumerate(node.input):
        if not tensor:
            continue
        dtype = g.dtype(tensor)
        if dtype == "?":
            yield bad("unknown-type", f"input {i} '{tensor}' has no known type", dtype)
            continue
        if dtype == "UINT8" and op != "Cast":
            yield bad("uint8-read-by-cast", f"input {i} '{tensor}' is UINT8", dtype)
        elif i not in params and dtype not in SUPPORTED_TYPES[op]:
            yield bad("op-types", f"input {i} '{tensor}' is {dtype}; {op} takes {', '.join(sorted(SUPPORTED_TYPES[op]))}",
                      dtype)
    for i in _SHAPE_INPUTS.get(op, ()):
        if i < len(node.input) and node.input[i] and node.input[i] not in g.shape_derived:
            yield bad("static-shapes", f"shape input {i} '{node.input[i]}' is computed from tensor values")
    for output in node.output:
        if output and g.dtype(output) == "UINT8" and output not in g.outputs:
            yield bad("uint8-io-only", f"output '{output}' is an intermediate UINT8 tensor", "UINT8")
    yield from _OP_CHECKS.get(op, _no_checks)(g, node, bad)


def _no_checks(g: _Graph, node: "onnx.NodeProto", bad: Any) -> Iterable[Violation]:
    return ()


def _check_cast(g: _Graph, node: "onnx.NodeProto", bad: Any) -> Iterable[Violation]:
    src, dst = g.dtype(node.input[0]), _cast_target(node)
    if dst == "?" or dst not in SUPPORTED_TYPES["Cast"]:
        yield bad("cast-target", f"casts to {dst}", src)
    if (src == "UINT8" and dst not in _UINT8_CASTS) or (dst == "UINT8" and src not in _UINT8_CASTS):
        yield bad("uint8-cast-float", f"casts {src} to {dst}", src)


def _check_qdq(g: _Graph, node: "onnx.NodeProto", bad: Any) -> Iterable[Violation]:
    import numpy as np

    zero = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if zero is None:
        yield bad("qdq-zero-point", "no zero point (ONNX then means UINT8); give an INT8 zero point of zeros")
    elif g.dtype(zero) != "INT8":
        yield bad("qdq-zero-point", f"zero point '{zero}' is {g.dtype(zero)}, not INT8", g.dtype(zero))
    elif zero not in g.constants or np.any(g.constants[zero] != 0):
        yield bad("qdq-zero-point", f"zero point '{zero}' is not a constant of zeros")
    scale = node.input[1]
    values = g.constants.get(scale)
    if values is None:
        yield bad("qdq-scale", f"scale '{scale}' is not a constant")
        return
    if np.any(~(values > 0)):
        yield bad("qdq-scale", f"scale '{scale}' has values that are not positive")
    if values.ndim > 1:
        yield bad("qdq-scale", f"scale '{scale}' has {values.ndim} dimensions (blocked scales are not used here)")
    elif values.size > 1:
        data = node.input[0]
        shape = g.constants[data].shape if data in g.constants else None
        axis = _attrs(node).get("axis", 1)
        if shape is not None and shape[axis] != values.size:
            yield bad("qdq-scale", f"{values.size} scales for {shape[axis]} channels along axis {axis}")


def _check_resize(g: _Graph, node: "onnx.NodeProto", bad: Any) -> Iterable[Violation]:
    attrs = _attrs(node)
    mode = attrs.get("mode", "nearest")
    transform = attrs.get("coordinate_transformation_mode", "half_pixel")
    if mode not in _RESIZE_MODES:
        yield bad("resize-attributes", f"mode {mode!r}")
    if transform not in _RESIZE_TRANSFORMS:
        yield bad("resize-attributes", f"coordinate_transformation_mode {transform!r}")
    if attrs.get("nearest_mode", "round_prefer_floor") not in _NEAREST_MODES:
        yield bad("resize-attributes", f"nearest_mode {attrs['nearest_mode']!r}")
    if attrs.get("antialias", 0):
        yield bad("resize-attributes", "antialias=1")
    if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        yield bad("resize-attributes", f"keep_aspect_ratio_policy {attrs['keep_aspect_ratio_policy']!r}")
    sizes = node.input[3] if len(node.input) > 3 and node.input[3] else None
    scales = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if mode == "linear" and sizes is None and scales in g.constants:
        values = list(g.constants[scales].reshape(-1))
        if any(v != 1 for v in values[:-3]):
            yield bad("resize-linear-axes", f"constant scales {values} resize an outer dimension")


def _check_axes_constant(g: _Graph, node: "onnx.NodeProto", bad: Any) -> Iterable[Violation]:
    i = _AXES_INPUT[node.op_type]
    if i < len(node.input) and node.input[i] and node.input[i] not in g.constants:
        yield bad("constant-axes", f"axes input '{node.input[i]}' is not an initializer")


def _check_pool(g: _Graph, node: "onnx.NodeProto", bad: Any) -> Iterable[Violation]:
    attrs = _attrs(node)
    kernel = attrs.get("kernel_shape", [])
    if len(kernel) not in (2, 3):
        yield bad("pool-rank", f"{len(kernel)}-D pooling")
    if any(d != 1 for d in attrs.get("dilations", [])):
        yield bad("pool-rank", f"dilations {attrs['dilations']}")
    if node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1:
        yield bad("pool-rank", "the Indices output is used")


def _check_topk(g: _Graph, node: "onnx.NodeProto", bad: Any) -> Iterable[Violation]:
    k = g.constants.get(node.input[1]) if len(node.input) > 1 else None
    if k is None or int(k.reshape(-1)[0]) >= 3840:
        yield bad("topk-k", "K is not an initializer below 3840")
    if _attrs(node).get("sorted", 1) != 1:
        yield bad("topk-k", "sorted=0")


def _check_batchnorm(g: _Graph, node: "onnx.NodeProto", bad: Any) -> Iterable[Violation]:
    for i in range(1, 5):
        values = g.constants.get(node.input[i]) if i < len(node.input) else None
        if values is not None and values.ndim != 1:
            yield bad("batchnorm-1d", f"input {i} has shape {values.shape}")


def _check_constant(g: _Graph, node: "onnx.NodeProto", bad: Any) -> Iterable[Violation]:
    kinds = {a.name for a in node.attribute}
    if kinds & {"sparse_value", "value_string", "value_strings"}:
        yield bad("constant-value", f"attribute {', '.join(sorted(kinds))}")


_OP_CHECKS: dict[str, Any] = {
    "Cast": _check_cast, "QuantizeLinear": _check_qdq, "DequantizeLinear": _check_qdq, "Resize": _check_resize,
    "MaxPool": _check_pool, "AveragePool": _check_pool, "TopK": _check_topk, "BatchNormalization": _check_batchnorm,
    "Constant": _check_constant, **{op: _check_axes_constant for op in _AXES_INPUT},
}


def check_tensorrt(model: "onnx.ModelProto") -> list[Violation]:
    """Every place `model` breaks a rule of TensorRT's ONNX parser (or this project's policy); [] when none."""
    g = _Graph(model)
    violations: list[Violation] = []
    seen: dict[str, int] = {}
    for index, node in enumerate(g.graph.node):
        name = node.name or f"#{index}"
        if not node.name:
            violations.append(Violation(name, node.op_type, "-", RULES["named-nodes"], "the node has no name"))
        elif node.name in seen:
            violations.append(Violation(name, node.op_type, "-", RULES["named-nodes"],
                                        f"the name is also used by node #{seen[node.name]}"))
        seen.setdefault(node.name, index)
        violations.extend(_check_node(g, node, name))
    return violations


def require_tensorrt(model: "onnx.ModelProto", what: str, *, limit: int = 8) -> None:
    """Raise BuildError naming each violation (up to `limit`) when `model` would not get through the parser."""
    violations = check_tensorrt(model)
    if not violations:
        return
    shown = "; ".join(str(v) for v in violations[:limit])
    more = f"; and {len(violations) - limit} more" if len(violations) > limit else ""
    raise BuildError(f"{what} would be rejected by TensorRT's ONNX parser ({len(violations)} problem(s)): {shown}{more}. "
                     "Export the pipeline graph with 'bisenet-rt export' (or quantize with 'bisenet-rt build "
                     "--precision int8') instead of editing it by hand")
