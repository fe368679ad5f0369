"""The nodes around the model in the pipeline graph: pre-processing in, exact arg-max labels out.

Every node and the tensor it makes share one readable name (`pre/resize`, `post/argmax`), so a
parser or runtime error names the step. Types are chosen for TensorRT's ONNX parser: uint8 is
touched only by the first Cast (to FLOAT) and written only by the last (from FLOAT/FLOAT16), and
no shape depends on the frame's content, so the cost is the same for every frame and the engine
can be captured in a CUDA graph. `bisenet_rt.builders.trt_conformance` checks both.

Post-processing is the dense, exact `argmax(bilinear_upsample(logits))` of `pipeline.postprocess`
(with the model's own final x8 upsample): bilinear Resizes of the channels-last logits to the frame
size, then the arg-max over the contiguous class axis, laid out in one of two `PostForm`s. Nothing
is skipped where the answer looks obvious, so a noise frame costs what a smooth one does.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..families import DEFAULT_FAMILY, ChannelOrder, Normalization

if TYPE_CHECKING:
    import onnx

__all__ = ["GraphPart", "Preprocessed", "PostForm", "ModelUpsample", "preprocess_nodes", "postprocess_nodes",
           "FLOAT", "FLOAT16", "UINT8"]

#: onnx.TensorProto element types, named once (onnx is imported only by the functions that build graphs).
FLOAT, UINT8, FLOAT16 = 1, 2, 10


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


class PostForm(str, enum.Enum):
    """How the exact upsample + arg-max is laid out; the same function in every form.

    RESIZE: the model's x8 upsample and the resize to the frame size as two 2-D Resizes of the
    channels-last logits (TensorRT, OpenVINO). SEPARABLE: both split per axis, the columns first
    while there are only 1/8 of the rows, then the rows over a contiguous run of W x C values
    (ONNX Runtime on CPUs, whose channels-last Resize is slow for 19 channels); the same linear map,
    since resizing along H and along W commute.
    """

    RESIZE = "resize"
    SEPARABLE = "separable"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class ModelUpsample:
    """The model's own final bilinear upsample, detached from the plain graph: its N x C x h/f x w/f
    input, the factor f and the Resize attributes (the post-processing redoes it in its form)."""

    coarse: str
    factor: int
    attributes: dict[str, Any]


def postprocess_nodes(upsample: ModelUpsample, labels: str, num_classes: int, model_size: tuple[int, int],
                      logits_dtype: int, pre: Preprocessed, form: PostForm = PostForm.RESIZE) -> GraphPart:
    """The model's x8 upsample, the bilinear upsample to the frame size and the arg-max -> uint8 `labels`.

    Exactly `pipeline.postprocess` after the model (half-pixel bilinear, arg-max over the classes),
    channels last so each pixel's class vector is contiguous for the arg-max. The INT64 ids reach
    uint8 through the logits' float type, the one conversion TensorRT allows into uint8 (ids < 256
    are exact in FLOAT16 too).
    """
    post = GraphPart("post")
    f = upsample.factor
    classes = post.const("classes", [num_classes], np.int64)
    coarse = post.op("Transpose", [upsample.coarse], "coarse_to_nhwc", perm=[0, 2, 3, 1])
    frame_shape = [pre.batch, pre.frame_hw, classes]
    if form is PostForm.RESIZE:
        logits = post.op("Resize", [coarse, "", post.const("model_scales", [1, f, f, 1], np.float32)], "model_upsample",
                         **upsample.attributes)
        sizes = post.op("Concat", frame_shape, "frame_shape", axis=0)
        upsampled = post.op("Resize", [logits, "", "", sizes], "resize", mode="linear",
                            coordinate_transformation_mode="half_pixel")
    else:
        axis0 = post.const("axis0", [0], np.int64)
        frame_h = post.op("Slice", [pre.frame_hw, post.const("h_start", [0], np.int64),
                                    post.const("h_end", [1], np.int64), axis0], "frame_h")
        frame_w = post.op("Slice", [pre.frame_hw, post.const("w_start", [1], np.int64),
                                    post.const("w_end", [2], np.int64), axis0], "frame_w")
        coarse_rows = post.op("Concat", [pre.batch, post.const("coarse_h", [model_size[1] // f], np.int64)],
                              "coarse_rows", axis=0)
        cols = post.op("Resize", [coarse, "", post.const("cols_scales", [1, 1, f, 1], np.float32)],
                       "cols_model_upsample", **upsample.attributes)
        cols = post.op("Resize", [cols, "", "", post.op("Concat", [coarse_rows, frame_w, classes], "cols_shape", axis=0)],
                       "cols_resize", mode="linear", coordinate_transformation_mode="half_pixel")
        one = post.const("one", [1], np.int64)
        row_length = post.op("Mul", [frame_w, classes], "row_length")
        rows = post.op("Reshape", [cols, post.op("Concat", [coarse_rows, one, row_length], "rows_shape", axis=0)],
                       "as_rows")
        rows = post.op("Resize", [rows, "", post.const("rows_scales", [1, f, 1, 1], np.float32)],
                       "rows_model_upsample", **upsample.attributes)
        rows = post.op("Resize", [rows, "", "", post.op("Concat", [pre.batch, frame_h, one, row_length],
                                                            "frame_rows_shape", axis=0)],
                       "rows_resize", mode="linear", coordinate_transformation_mode="half_pixel")
        upsampled = post.op("Reshape", [rows, post.op("Concat", frame_shape, "frame_shape", axis=0)], "as_frame")
    ids = post.op("ArgMax", [upsampled], "argmax", axis=3, keepdims=0)
    ids_float = post.op("Cast", [ids], "to_float", to=logits_dtype)
    post.op("Cast", [ids_float], "to_uint8", to=UINT8, output=labels)
    return post
