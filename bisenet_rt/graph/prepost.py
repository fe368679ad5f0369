"""The nodes around the model in the pipeline graph: pre-processing in, exact arg-max labels out.

Every node and the tensor it makes share one readable name (`pre/resize`, `post/argmax`), so a
parser or runtime error names the step. Types are chosen for TensorRT's ONNX parser: uint8 is
touched only by the first Cast (to FLOAT) and written only by the last (from FLOAT/FLOAT16), and
no shape depends on the frame's content, so the cost is the same for every frame and the engine
can be captured in a CUDA graph. `bisenet_rt.backends.tensorrt.conformance` checks both.

Post-processing is the dense, exact `argmax(bilinear_upsample(logits))` of `model.reference.postprocess`
(with the model's own final x8 upsample), laid out in one of three `PostForm`s, each the fastest
on one runtime's kernels (each backend spec's `graph_forms` says which it gets). Nothing is skipped
where the answer looks obvious, so a noise frame costs what a smooth one does.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..families import DEFAULT_FAMILY, ChannelOrder, Normalization
from ..post_form import PostForm

if TYPE_CHECKING:
    import onnx

__all__ = ["GraphPart", "Preprocessed", "PostForm", "BANDS", "ModelUpsample", "preprocess_nodes",
           "postprocess_nodes", "part_graph", "with_model_cast", "coarse_logits", "model_upsample_mode", "FLOAT", "FLOAT16",
           "UINT8"]

#: onnx.TensorProto element types, named once (onnx is imported only by the functions that build graphs).
FLOAT, UINT8, FLOAT16 = 1, 2, 10
_NUMPY_DTYPE = {FLOAT: np.float32, FLOAT16: np.float16}


class GraphPart:
    """Nodes and constants of one named part of the graph; a node's single output carries the node's name."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list["onnx.NodeProto"] = []
        self.initializers: list["onnx.TensorProto"] = []

    def const(self, name: str, value: Any, dtype: Any = None) -> str:
        """Add a constant (an initializer) named `prefix/name`; return its name."""
        from onnx import numpy_helper

        full = f"{self.prefix}/{name}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), full))
        return full

    def ints(self, *values: int) -> str:
        """An INT64 vector constant, added once per part however often it is asked for (`prefix/int64/1_2`)."""
        name = "int64/" + "_".join(str(v) for v in values)
        full = f"{self.prefix}/{name}"
        if all(init.name != full for init in self.initializers):
            self.const(name, list(values), np.int64)
        return full

    def op(self, op_type: str, inputs: Sequence[str], name: str, *, output: str | None = None, **attrs: Any) -> str:
        """Add node `prefix/name`; its output is named the same unless `output` is given. Returns the output."""
        from onnx import helper

        full = f"{self.prefix}/{name}"
        out = output or full
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=full, **attrs))
        return out


@dataclasses.dataclass(frozen=True)
class Preprocessed:
    """What the pre-processing hands on: its nodes, and the shape tensors the post-processing reuses."""

    part: GraphPart
    batch: str     # INT64 [1]: N
    frame_hw: str  # INT64 [2]: H, W


def _normalization(normalization: Normalization) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel scale and shift (1 x 3 x 1 x 1) that take 0..255 values to the checkpoint family's input."""
    scale, shift = normalization.scale_shift()
    return scale.reshape(1, 3, 1, 1).astype(np.float32), shift.reshape(1, 3, 1, 1).astype(np.float32)


def preprocess_nodes(frames: str, model_input: str, model_size: tuple[int, int], model_dtype: int,
                     normalization: Normalization = DEFAULT_FAMILY.normalization) -> Preprocessed:
    """uint8 N x H x W x 3 BGR `frames` -> normalized N x 3 x h x w `model_input` of `model_dtype`.

    Cast first (the only reader of the uint8 input), bilinear resize in NHWC (half-pixel, no
    antialiasing, as `pipeline.preprocess`), then to NCHW, BGR -> the family's colour order, and the
    family's mean and std as one multiply-add at the model size. Resizing before normalizing is the
    same function (both linear).
    """
    w, h = model_size
    pre = GraphPart("pre")
    pixels = pre.op("Cast", [frames], "to_float", to=FLOAT)
    shape = pre.op("Shape", [pixels], "frame_shape")
    axis0 = pre.const("axis0", [0], np.int64)
    batch = pre.op("Slice", [shape, pre.const("n_start", [0], np.int64), pre.const("n_end", [1], np.int64), axis0],
                   "batch")
    frame_hw = pre.op("Slice", [shape, pre.const("hw_start", [1], np.int64), pre.const("hw_end", [3], np.int64), axis0],
                      "frame_hw")
    sizes = pre.op("Concat", [batch, pre.const("model_hwc", [h, w, 3], np.int64)], "model_shape", axis=0)
    small = pre.op("Resize", [pixels, "", "", sizes], "resize", mode="linear",
                   coordinate_transformation_mode="half_pixel")
    nchw = pre.op("Transpose", [small], "to_nchw", perm=[0, 3, 1, 2])
    rgb = nchw
    if normalization.order is ChannelOrder.RGB:
        rgb = pre.op("Gather", [nchw, pre.const("rgb_from_bgr", [2, 1, 0], np.int64)], "bgr_to_rgb", axis=1)
    scale, shift = _normalization(normalization)
    scaled = pre.op("Mul", [rgb, pre.const("rgb_scale", scale)], "scale")
    if model_dtype == FLOAT:
        pre.op("Add", [scaled, pre.const("rgb_shift", shift)], "normalize", output=model_input)
    else:
        normalized = pre.op("Add", [scaled, pre.const("rgb_shift", shift)], "normalize")
        pre.op("Cast", [normalized], "to_model_dtype", to=model_dtype, output=model_input)
    return Preprocessed(pre, batch, frame_hw)


#: Static band counts of the banded forms: enough bands that one band's logits stay small, few enough that
#: per-node overhead does not add up (measured by benchmarks/prepost_overhead.py).
BANDS: dict[PostForm, int] = {PostForm.ROW_BANDS: 16, PostForm.COLUMN_BANDS: 32}
_HALF_PIXEL = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}


@dataclasses.dataclass(frozen=True)
class ModelUpsample:
    """The model's own final bilinear upsample, detached from the plain graph: its N x C x h/f x w/f
    input, the factor f and the Resize attributes (the post-processing redoes it in its form)."""

    coarse: str
    factor: int
    attributes: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class _Bands:
    """Static bands of output positions along one axis: band b covers [start_b, end_b) (the last ones may run
    into padding past the frame) and reads only the coarse positions [first_b, last_b) of that axis."""

    count: int
    size: str     # INT64 [1]: positions per band
    padded: str   # INT64 [1]: count * size
    starts: str   # INT64 [count]
    ends: str
    first: str
    last: str


def _bands(post: GraphPart, axis: str, length: str, coarse: int, count: int) -> _Bands:
    """Band layout for `length` output positions (a dynamic frame dimension) resized from `coarse` ones.

    Bands have ceil(length / count) positions, so none is empty, also for frames smaller than the
    band count. Output x sits at coarse position u = (x + 0.5) * coarse / length - 0.5 and reads
    coarse positions within u +- 1.25 (x8 upsample, then resize); a band spans at most
    coarse / count more, so a window of ceil(coarse / count) + 5 from floor(u(start)) - 2, clamped
    into the axis, holds everything the band reads. All of it is shape arithmetic (no data-dependent
    shapes); the window width is static.
    """
    window = min(coarse, -(-coarse // count) + 5)
    i = post.ints
    size = post.op("Div", [post.op("Add", [length, i(count - 1)], f"{axis}/length_up"), i(count)], f"{axis}/band_size")
    padded = post.op("Mul", [size, i(count)], f"{axis}/padded")
    starts = post.op("Mul", [i(*range(count)), size], f"{axis}/band_starts")
    ends = post.op("Add", [starts, size], f"{axis}/band_ends")
    # floor(u(start) - 2) = floor(((2 * start + 1) * coarse - 5 * length) / (2 * length)); below 0 it clamps to 0,
    # so rounding toward zero or down (runtimes differ for negative integers) gives the same window
    odd = post.op("Add", [post.op("Mul", [starts, i(2)], f"{axis}/twice_starts"), i(1)], f"{axis}/odd_starts")
    numerator = post.op("Sub", [post.op("Mul", [odd, i(coarse)], f"{axis}/scaled_starts"),
                                post.op("Mul", [length, i(5)], f"{axis}/margin")], f"{axis}/window_numerator")
    first = post.op("Div", [numerator, post.op("Mul", [length, i(2)], f"{axis}/window_denominator")],
                    f"{axis}/window_floor")
    first = post.op("Min", [post.op("Max", [first, i(0)], f"{axis}/window_above_0"), i(coarse - window)],
                    f"{axis}/window_first")
    last = post.op("Add", [first, i(window)], f"{axis}/window_last")
    return _Bands(count, size, padded, starts, ends, first, last)


def _interpolation_matrix(post: GraphPart, upsample: ModelUpsample, coarse: int, length: str, padded: str,
                          dtype: int, axis: str) -> str:
    """The coarse x `padded` matrix of the model's x8 upsample followed by the resize to `length`, along one axis.

    Resize is linear, so the very same two Resizes applied to the coarse x coarse identity give the
    matrix: row k is what a unit impulse at coarse position k becomes. Columns past `length`, up to
    whole bands, are zero. A product with it sums the same (at most four) non-zero terms the two
    Resizes sum, in another order: equal up to float rounding.
    """
    f, i = upsample.factor, post.ints
    impulses = post.const(f"{axis}/impulses", np.eye(coarse).reshape(1, coarse, coarse, 1), _NUMPY_DTYPE[dtype])
    fine = post.op("Resize", [impulses, "", post.const(f"{axis}/model_scales", [1, 1, f, 1], np.float32)],
                   f"{axis}/model_upsample", **upsample.attributes)
    sizes = post.op("Concat", [i(1, coarse), length, i(1)], f"{axis}/sizes", axis=0)
    resized = post.op("Resize", [fine, "", "", sizes], f"{axis}/resize", **_HALF_PIXEL)
    matrix = post.op("Reshape", [resized, post.op("Concat", [i(coarse), length], f"{axis}/matrix_shape", axis=0)],
                     f"{axis}/matrix")
    pads = post.op("Concat", [i(0, 0, 0), post.op("Sub", [padded, length], f"{axis}/padding")], f"{axis}/pads", axis=0)
    return post.op("Pad", [matrix, pads], f"{axis}/matrix_padded")


def _band_operands(post: GraphPart, bands: _Bands, matrix: str, data: str, data_axis: int) -> list[tuple[str, str]]:
    """Per band: its block of the coarse x padded interpolation matrix (window x band positions) and the window
    of `data` along `data_axis` (the coarse positions the band reads). Static slices of the band layout."""
    i = post.ints
    operands = []
    for b in range(bands.count):
        start, end, first, last = (post.op("Slice", [vector, i(b), i(b + 1)], f"band{b}/{what}")
                                   for vector, what in ((bands.starts, "start"), (bands.ends, "end"),
                                                        (bands.first, "first"), (bands.last, "last")))
        block = post.op("Slice", [matrix, post.op("Concat", [first, start], f"band{b}/weights_from", axis=0),
                                  post.op("Concat", [last, end], f"band{b}/weights_to", axis=0), i(0, 1)],
                        f"band{b}/weights")
        operands.append((block, post.op("Slice", [data, first, last, i(data_axis)], f"band{b}/window")))
    return operands


def _frame_dims(post: GraphPart, pre: Preprocessed) -> tuple[str, str]:
    """The frame's H and W, each an INT64 [1]."""
    i = post.ints
    return (post.op("Slice", [pre.frame_hw, i(0), i(1), i(0)], "frame_h"),
            post.op("Slice", [pre.frame_hw, i(1), i(2), i(0)], "frame_w"))


def _band_labels(post: GraphPart, band_ids: list[str], axis: int, length: str, labels: str) -> None:
    """Concatenate the bands' class ids along `axis`, drop the padding past `length`, cast to uint8 `labels`."""
    i = post.ints
    ids = post.op("Concat", band_ids, "bands", axis=axis)
    ids = post.op("Slice", [ids, i(0), length, i(axis)], "crop")
    post.op("Cast", [ids], "to_uint8", to=UINT8, output=labels)


def _resize_form(post: GraphPart, upsample: ModelUpsample, classes: str, pre: Preprocessed, logits_dtype: int,
                 labels: str) -> None:
    f = upsample.factor
    coarse = post.op("Transpose", [upsample.coarse], "coarse_to_nhwc", perm=[0, 2, 3, 1])
    logits = post.op("Resize", [coarse, "", post.const("model_scales", [1, f, f, 1], np.float32)], "model_upsample",
                     **upsample.attributes)
    sizes = post.op("Concat", [pre.batch, pre.frame_hw, classes], "frame_shape", axis=0)
    upsampled = post.op("Resize", [logits, "", "", sizes], "resize", **_HALF_PIXEL)
    ids = post.op("ArgMax", [upsampled], "argmax", axis=3, keepdims=0)
    ids_float = post.op("Cast", [ids], "to_float", to=logits_dtype)
    post.op("Cast", [ids_float], "to_uint8", to=UINT8, output=labels)


def _row_bands_form(post: GraphPart, upsample: ModelUpsample, classes: str, pre: Preprocessed,
                    model_size: tuple[int, int], logits_dtype: int, labels: str) -> None:
    """Columns first (x8, then to the frame width) at the coarse rows, channels last; then per band of output
    rows the [rows x window] @ [N x window x (W * C)] product and the arg-max over the contiguous classes."""
    f, i = upsample.factor, post.ints
    coarse_h = model_size[1] // f
    frame_h, frame_w = _frame_dims(post, pre)
    nhwc = post.op("Transpose", [upsample.coarse], "coarse_to_nhwc", perm=[0, 2, 3, 1])
    cols = post.op("Resize", [nhwc, "", post.const("cols_model_scales", [1, 1, f, 1], np.float32)],
                   "cols_model_upsample", **upsample.attributes)
    cols = post.op("Resize", [cols, "", "", post.op("Concat", [pre.batch, i(coarse_h), frame_w, classes],
                                                     "cols_shape", axis=0)], "cols_resize", **_HALF_PIXEL)
    row_length = post.op("Mul", [frame_w, classes], "row_length")
    cols = post.op("Reshape", [cols, post.op("Concat", [pre.batch, i(coarse_h), row_length], "rows_shape", axis=0)],
                   "as_rows")
    bands = _bands(post, "rows", frame_h, coarse_h, BANDS[PostForm.ROW_BANDS])
    matrix = _interpolation_matrix(post, upsample, coarse_h, frame_h, bands.padded, logits_dtype, "rows")
    band_shape = post.op("Concat", [pre.batch, bands.size, frame_w, classes], "band_shape", axis=0)
    ids = []
    for b, (block, window) in enumerate(_band_operands(post, bands, matrix, cols, 1)):
        weights = post.op("Transpose", [block], f"band{b}/weights_t", perm=[1, 0])  # band rows x window
        logits = post.op("Reshape", [post.op("MatMul", [weights, window], f"band{b}/interpolate"), band_shape],
                         f"band{b}/as_pixels")
        ids.append(post.op("Cast", [post.op("ArgMax", [logits], f"band{b}/argmax", axis=3, keepdims=0)],
                           f"band{b}/to_float", to=logits_dtype))
    _band_labels(post, ids, 1, frame_h, labels)


def _column_bands_form(post: GraphPart, upsample: ModelUpsample, classes: str, pre: Preprocessed,
                       model_size: tuple[int, int], logits_dtype: int, labels: str) -> None:
    """Rows first (x8, then to the frame height) at the coarse width, as N x H x C x w; then per band of output
    columns the [N x H x C x window] @ [window x columns] product and the arg-max over the classes."""
    f, i = upsample.factor, post.ints
    coarse_w = model_size[0] // f
    frame_h, frame_w = _frame_dims(post, pre)
    rows = post.op("Resize", [upsample.coarse, "", post.const("rows_model_scales", [1, 1, f, 1], np.float32)],
                   "rows_model_upsample", **upsample.attributes)
    rows = post.op("Resize", [rows, "", "", post.op("Concat", [pre.batch, classes, frame_h, i(coarse_w)],
                                                     "rows_shape", axis=0)], "rows_resize", **_HALF_PIXEL)
    rows = post.op("Transpose", [rows], "rows_to_nhcw", perm=[0, 2, 1, 3])
    bands = _bands(post, "cols", frame_w, coarse_w, BANDS[PostForm.COLUMN_BANDS])
    matrix = _interpolation_matrix(post, upsample, coarse_w, frame_w, bands.padded, logits_dtype, "cols")
    ids = []
    for b, (weights, window) in enumerate(_band_operands(post, bands, matrix, rows, 3)):
        logits = post.op("MatMul", [window, weights], f"band{b}/interpolate")
        ids.append(post.op("Cast", [post.op("ArgMax", [logits], f"band{b}/argmax", axis=2, keepdims=0)],
                           f"band{b}/to_float", to=logits_dtype))
    _band_labels(post, ids, 2, frame_w, labels)


def postprocess_nodes(upsample: ModelUpsample, labels: str, num_classes: int, model_size: tuple[int, int],
                      logits_dtype: int, pre: Preprocessed, form: PostForm = PostForm.RESIZE) -> GraphPart:
    """The model's x8 upsample, the bilinear upsample to the frame size and the arg-max -> uint8 `labels`.

    Exactly `pipeline.postprocess` after the model (half-pixel bilinear, arg-max over the classes),
    laid out as `form` says. The INT64 ids reach uint8 through the logits' float type, the one
    conversion TensorRT allows into uint8 (ids < 256 are exact in FLOAT16 too).
    """
    post = GraphPart("post")
    classes = post.const("classes", [num_classes], np.int64)  # `artifacts.graph_facts` reads the class count here
    if form is PostForm.RESIZE:
        _resize_form(post, upsample, classes, pre, logits_dtype, labels)
    elif form is PostForm.ROW_BANDS:
        _row_bands_form(post, upsample, classes, pre, model_size, logits_dtype, labels)
    else:
        _column_bands_form(post, upsample, classes, pre, model_size, logits_dtype, labels)
    return post


def _part_of(node: "onnx.NodeProto") -> str:
    """'pre', 'post' or 'model': which part of a pipeline graph a node belongs to, by its name."""
    return node.name.split("/", 1)[0] if node.name.startswith(("pre/", "post/")) else "model"


def coarse_logits(pipeline: "onnx.ModelProto") -> str | None:
    """The model's coarse logits in a pipeline graph: the one tensor a model node makes and a `post/` node reads
    (None where there is not exactly one, as in a graph an optimizer renamed)."""
    graph = pipeline.graph
    made_by_model = {out for node in graph.node if _part_of(node) == "model" for out in node.output}
    read_by_post = {name for node in graph.node if _part_of(node) == "post" for name in node.input}
    found = made_by_model & read_by_post
    return found.pop() if len(found) == 1 else None


def model_upsample_mode(pipeline: "onnx.ModelProto") -> str | None:
    """The coordinate mode of the model's own x8 upsample as the post-processing redoes it ('half_pixel', ...),
    or None where the graph has no such named Resize (the post-processing's `*model_upsample` nodes)."""
    from onnx import helper

    for node in pipeline.graph.node:
        if node.op_type == "Resize" and node.name.startswith("post/") and node.name.endswith("model_upsample"):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            mode = attrs.get("coordinate_transformation_mode", b"half_pixel")
            return mode.decode() if isinstance(mode, bytes) else str(mode)
    return None


def part_graph(pipeline: "onnx.ModelProto", part: str, model_input_shape: Sequence[Any] | None = None
               ) -> tuple["onnx.ModelProto", list[str]]:
    """One part of a pipeline graph as a graph of its own, to time or test it alone; and its input names.

    'model': the normalized N x 3 x h x w input -> the coarse logits the post-processing reads (every
    node outside `pre/` and `post/`; `model_input_shape` fixes the input's shape, which some runtimes
    need). 'post': uint8 frames (only their shape is read) and the coarse logits -> uint8 labels.
    """
    import onnx
    from onnx import helper

    graph = pipeline.graph
    where = {n.name: _part_of(n) for n in graph.node}
    producer = {out: where[n.name] for n in graph.node for out in n.output}
    (model_input,) = {i for n in graph.node if where[n.name] == "model" for i in n.input if producer.get(i) == "pre"}
    coarse = coarse_logits(pipeline)
    if coarse is None:
        raise ValueError("not a pipeline graph with named parts: no one model tensor read by the post-processing")
    fp16 = any(prop.key == "bisenet_rt.precision" and prop.value == "fp16" for prop in pipeline.metadata_props)
    float_type = FLOAT16 if fp16 else FLOAT
    if part == "model":
        nodes = [n for n in graph.node if where[n.name] == "model"]
        inputs = [helper.make_tensor_value_info(model_input, float_type, model_input_shape)]
        outputs = [helper.make_tensor_value_info(coarse, float_type, None)]
    elif part == "post":
        shape_of = {"pre/frame_shape", "pre/batch", "pre/frame_hw"}  # the frame's N, H, W, read from the uint8 input
        nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in graph.node
                 if where[n.name] == "post" or n.name in shape_of]
        for node in nodes:
            if node.name == "pre/frame_shape":
                node.input[0] = graph.input[0].name
        inputs = [graph.input[0], helper.make_tensor_value_info(coarse, float_type, ["N", None, None, None])]
        outputs = list(graph.output)
    else:
        raise ValueError(f"part must be 'model' or 'post', got {part!r}")
    used = {i for n in nodes for i in n.input}
    cut = helper.make_graph(nodes, f"pipeline_{part}", inputs, outputs,
                            initializer=[i for i in graph.initializer if i.name in used])
    model = helper.make_model(cut, opset_imports=list(pipeline.opset_import))
    model.ir_version = pipeline.ir_version
    return model, [i.name for i in inputs]


def with_model_cast(pipeline: "onnx.ModelProto", model: "onnx.ModelProto", model_input: str
                    ) -> tuple["onnx.ModelProto", str, str]:
    """`part_graph(pipeline, 'model')` with, for a graph whose model runs in another type (FP16), the pre-processing's
    cast to it (`pre/to_model_dtype`) put back in front: then its input is the FLOAT normalized frame. Returns the
    graph, its input's name and the name of the pipeline node that makes that input."""
    from onnx import helper

    producer = next((n for n in pipeline.graph.node if model_input in n.output), None)
    if producer is None or producer.name != "pre/to_model_dtype":
        return model, model_input, producer.name if producer is not None else "nothing"
    normalized = producer.input[0]
    model.graph.node.insert(0, producer)
    del model.graph.input[:]
    model.graph.input.append(helper.make_tensor_value_info(normalized, FLOAT, ["N", 3, None, None]))
    maker = next((n.name for n in pipeline.graph.node if normalized in n.output), "nothing")
    return model, normalized, maker
