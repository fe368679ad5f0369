"""ONNX export: the bare model (`plain`) and the whole pipeline graph with pre/post-processing inside.

The pipeline graph takes uint8 N x H x W x 3 BGR frames and returns uint8 N x H x W class ids, with
dynamic N, H and W; it runs unchanged on ONNX Runtime (CPU) and TensorRT. Precision is a property
of the graph (TensorRT 11 is strongly typed): an FP16 export has FP16 weights and activations.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .classes import DEFAULT_MODEL_SIZE, MEAN_RGB, STD_RGB, class_names
from .errors import ExportError
from .precision import Precision
from .sizes import check_model_size, format_size

if TYPE_CHECKING:
    import onnx
    import torch

__all__ = ["ExportConfig", "export_onnx", "export_plain", "build_pipeline", "convert_to_fp16", "read_metadata",
           "INPUT_NAME", "OUTPUT_NAME", "PLAIN_INPUT_NAME", "PLAIN_OUTPUT_NAME", "OPSET"]

INPUT_NAME = "frames"
OUTPUT_NAME = "labels"
PLAIN_INPUT_NAME = "input"
PLAIN_OUTPUT_NAME = "logits"
OPSET = 17
_MAX_CLASSES = 255  # labels are uint8
_ONNX_DTYPE = {Precision.FP32: 1, Precision.FP16: 10}  # onnx.TensorProto.FLOAT / FLOAT16


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What to export: precision, model input size (w, h), pipeline or plain graph."""

    precision: Precision = Precision.FP32
    model_size: tuple[int, int] = DEFAULT_MODEL_SIZE
    plain: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", Precision.parse(self.precision))
        try:
            object.__setattr__(self, "model_size", check_model_size(self.model_size))
        except ValueError as exc:
            raise ExportError(str(exc)) from None
        if self.precision not in _ONNX_DTYPE:
            raise ExportError(f"ONNX export supports fp32 and fp16; {self.precision} is made by "
                              f"'bisenet-rt build --precision {self.precision}' from an fp32 export")


def export_plain(model: "torch.nn.Module", model_size: tuple[int, int] = DEFAULT_MODEL_SIZE) -> "onnx.ModelProto":
    """Export the bare model in FP32: float N x 3 x h x w normalized RGB -> N x C x h x w logits."""
    import io

    import onnx
    import torch

    w, h = model_size
    model = model.float().eval()
    dummy = torch.zeros(1, 3, h, w)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice; it is pinned and tested
        torch.onnx.export(model, (dummy,), buf, dynamo=False, opset_version=OPSET, do_constant_folding=True,
                          input_names=[PLAIN_INPUT_NAME], output_names=[PLAIN_OUTPUT_NAME],
                          dynamic_axes={PLAIN_INPUT_NAME: {0: "N"}, PLAIN_OUTPUT_NAME: {0: "N"}})
    proto = onnx.load_from_string(buf.getvalue())
    return _drop_identities(proto)


def _drop_identities(proto: "onnx.ModelProto") -> "onnx.ModelProto":
    """Remove the Identity nodes the exporter leaves on folded weights (rename their consumers' inputs)."""
    graph = proto.graph
    outputs = {o.name for o in graph.output}
    alias = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
        else:
            keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(keep)
    return proto


def convert_to_fp16(proto: "onnx.ModelProto") -> "onnx.ModelProto":
    """Make a plain FP32 graph FP16-typed: weights, activations and the float I/O become FP16.

    Resize's `roi`/`scales` inputs stay FP32 as the ONNX spec requires.
    """
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    keep_fp32 = {n.input[i] for n in graph.node if n.op_type == "Resize" for i in (1, 2) if len(n.input) > i}
    for i, init in enumerate(graph.initializer):
        if init.data_type == onnx.TensorProto.FLOAT and init.name not in keep_fp32:
            arr = numpy_helper.to_array(init).astype(np.float16)
            graph.initializer[i].CopyFrom(numpy_helper.from_array(arr, init.name))
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] not in keep_fp32:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == onnx.TensorProto.FLOAT:
                    arr = numpy_helper.to_array(attr.t).astype(np.float16)
                    attr.t.CopyFrom(numpy_helper.from_array(arr))
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                    attr.i = onnx.TensorProto.FLOAT16
    for value in list(graph.input) + list(graph.output):
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    del graph.value_info[:]
    return proto


def _const(name: str, value: np.ndarray) -> "onnx.TensorProto":
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value), name)


def _source_index_nodes(prefix: str, out_len: str, in_len: int) -> tuple[list, list]:
    """Nodes computing, for every output position along one axis, the two bilinear source indices
    and the weight of the second (align_corners=False, sources clamped as PyTorch does)."""
    from onnx import helper

    p = prefix
    nodes = [
        helper.make_node("Range", [f"{p}_zero", out_len, f"{p}_one"], [f"{p}_pos"]),
        helper.make_node("Cast", [f"{p}_pos"], [f"{p}_posf"], to=1),
        helper.make_node("Cast", [out_len], [f"{p}_lenf"], to=1),
        helper.make_node("Div", [f"{p}_in_f", f"{p}_lenf"], [f"{p}_scale"]),
        helper.make_node("Add", [f"{p}_posf", f"{p}_half"], [f"{p}_a"]),
        helper.make_node("Mul", [f"{p}_a", f"{p}_scale"], [f"{p}_b"]),
        helper.make_node("Sub", [f"{p}_b", f"{p}_half"], [f"{p}_c"]),
        helper.make_node("Max", [f"{p}_c", f"{p}_zerof"], [f"{p}_src"]),
        helper.make_node("Floor", [f"{p}_src"], [f"{p}_floor"]),
        helper.make_node("Min", [f"{p}_floor", f"{p}_lastf"], [f"{p}_i0f"]),
        helper.make_node("Sub", [f"{p}_src", f"{p}_i0f"], [f"{p}_w1"]),
        helper.make_node("Sub", [f"{p}_onef", f"{p}_w1"], [f"{p}_w0"]),
        helper.make_node("Cast", [f"{p}_i0f"], [f"{p}_i0"], to=7),
        helper.make_node("Add", [f"{p}_i0", f"{p}_one"], [f"{p}_i1u"]),
        helper.make_node("Min", [f"{p}_i1u", f"{p}_last"], [f"{p}_i1"]),
    ]
    inits = [
        _const(f"{p}_zero", np.array(0, np.int64)), _const(f"{p}_one", np.array(1, np.int64)),
        _const(f"{p}_last", np.array(in_len - 1, np.int64)), _const(f"{p}_in_f", np.array(in_len, np.float32)),
        _const(f"{p}_half", np.array(0.5, np.float32)), _const(f"{p}_zerof", np.array(0.0, np.float32)),
        _const(f"{p}_onef", np.array(1.0, np.float32)), _const(f"{p}_lastf", np.array(in_len - 1, np.float32)),
    ]
    return nodes, inits


def _channels_last_logits(graph: "onnx.GraphProto", model_out: str) -> str:
    """Make the model's final x8 bilinear Resize produce N x h x w x C (same values, channels last).

    The post-processing reads whole class vectors per pixel; in NHWC they are contiguous, which
    makes the arg-max and the boundary gathers cheap without a full-size transpose.
    """
    from onnx import helper, numpy_helper

    node = next(n for n in graph.node if model_out in n.output)
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute[0].name == "value"})
    if node.op_type != "Resize" or len(node.input) < 3 or node.input[2] not in consts:
        raise ExportError("unexpected plain graph: its output is not produced by a constant-scale Resize")
    scales = consts[node.input[2]]
    nhwc_scales = numpy_helper.from_array(scales[[0, 2, 3, 1]].astype(np.float32), "post_nhwc_scales")
    graph.initializer.append(nhwc_scales)
    transpose = helper.make_node("Transpose", [node.input[0]], ["post_coarse_nhwc"], perm=[0, 2, 3, 1])
    node.input[0] = "post_coarse_nhwc"
    node.input[2] = "post_nhwc_scales"
    node.output[0] = "logits_nhwc"
    index = list(graph.node).index(node)
    graph.node.insert(index, transpose)
    return "logits_nhwc"


def build_pipeline(plain: "onnx.ModelProto", config: ExportConfig, num_classes: int) -> "onnx.ModelProto":
    """Wrap a plain graph (FP32 or FP16-typed) with in-graph pre- and post-processing.

    Pre: uint8 NHWC BGR -> float -> bilinear resize to the model size (NHWC) -> NCHW -> one 1x1
    conv that both reorders BGR to RGB and applies /255, mean and std (cheaper at the model size).
    Post: the exact arg-max of the bilinearly upsampled logits, computed sparsely. Every upsampled
    logit vector is a convex combination of its (up to) four source vectors, so where all four
    share an arg-max that is the label; only pixels whose sources disagree are interpolated in full.
    """
    import onnx
    from onnx import helper

    if num_classes > _MAX_CLASSES:
        raise ExportError(f"the pipeline graph returns uint8 labels, so at most {_MAX_CLASSES} classes; got {num_classes}")
    w, h = config.model_size
    fdt = _ONNX_DTYPE[config.precision]
    plain = onnx.ModelProto.FromString(plain.SerializeToString())
    graph = plain.graph
    model_in = graph.input[0].name
    logits = _channels_last_logits(graph, graph.output[0].name)

    weight = np.zeros((3, 3, 1, 1), np.float32)
    bias = np.zeros(3, np.float32)
    for rgb, bgr in enumerate((2, 1, 0)):
        weight[rgb, bgr, 0, 0] = 1.0 / (255.0 * STD_RGB[rgb])
        bias[rgb] = -MEAN_RGB[rgb] / STD_RGB[rgb]
    inits = [
        _const("pre_norm_w", weight), _const("pre_norm_b", bias), _const("pre_hwc", np.array([h, w, 3], np.int64)),
        _const("ax0", np.array([0], np.int64)), _const("ax1", np.array([1], np.int64)),
        _const("ax2", np.array([2], np.int64)), _const("ax3", np.array([3], np.int64)),
        _const("hw", np.array(h * w, np.int64)),
        _const("nchw_1hw", np.array([-1, 1, h, w], np.int64)), _const("nhwc_hw1", np.array([-1, h, w, 1], np.int64)),
        _const("w_i", np.array(w, np.int64)), _const("class_rows", np.array([-1, num_classes], np.int64)),
    ]
    pre = [
        helper.make_node("Shape", [INPUT_NAME], ["frame_shape"]),
        helper.make_node("Slice", ["frame_shape", "ax0", "ax1"], ["batch"]),
        helper.make_node("Gather", ["frame_shape", "ax1"], ["frame_h1"], axis=0),
        helper.make_node("Gather", ["frame_shape", "ax2"], ["frame_w1"], axis=0),
        helper.make_node("Squeeze", ["frame_h1", "ax0"], ["frame_h"]),
        helper.make_node("Squeeze", ["frame_w1", "ax0"], ["frame_w"]),
        helper.make_node("Cast", [INPUT_NAME], ["pre_f"], to=1),
        helper.make_node("Concat", ["batch", "pre_hwc"], ["pre_sizes"], axis=0),
        helper.make_node("Resize", ["pre_f", "", "", "pre_sizes"], ["pre_small_nhwc"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Transpose", ["pre_small_nhwc"], ["pre_small"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["pre_small", "pre_norm_w", "pre_norm_b"], ["pre_norm"]),
        helper.make_node("Cast", ["pre_norm"], [model_in], to=fdt),
    ]

    rows, rows_init = _source_index_nodes("ry", "frame_h", h)
    cols, cols_init = _source_index_nodes("cx", "frame_w", w)
    inits += rows_init + cols_init
    # Coarse arg-max, and the cells (2 x 2 source windows) whose four corners disagree: max != min.
    # Max-pooling ignores the padding, so the last row and column compare only real neighbours.
    post = rows + cols + [
        helper.make_node("ArgMax", [logits], ["am"], axis=3, keepdims=1),
        helper.make_node("Cast", ["am"], ["am_f"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Reshape", ["am_f", "nchw_1hw"], ["am_nchw"]),
        helper.make_node("MaxPool", ["am_nchw"], ["am_max"], kernel_shape=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("Neg", ["am_nchw"], ["am_neg"]),
        helper.make_node("MaxPool", ["am_neg"], ["am_negmin"], kernel_shape=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("Add", ["am_max", "am_negmin"], ["am_spread"]),
        helper.make_node("Reshape", ["am_spread", "nhwc_hw1"], ["am_spread_nhwc"]),
        helper.make_node("Cast", ["am_spread_nhwc"], ["cell_bd"], to=onnx.TensorProto.UINT8),
        helper.make_node("Cast", ["am"], ["am_u8"], to=onnx.TensorProto.UINT8),
        # Every frame pixel takes its top-left source cell's label and boundary flag (rows, then columns).
        helper.make_node("Gather", ["am_u8", "ry_i0"], ["lab_rows"], axis=1),
        helper.make_node("Gather", ["lab_rows", "cx_i0"], ["lab_coarse"], axis=2),
        helper.make_node("Gather", ["cell_bd", "ry_i0"], ["bd_rows"], axis=1),
        helper.make_node("Gather", ["bd_rows", "cx_i0"], ["is_bd"], axis=2),
        # Full bilinear interpolation at the boundary pixels only: K x 4 indices (n, y, x, 0).
        helper.make_node("NonZero", ["is_bd"], ["bd_nz"]),
        helper.make_node("Transpose", ["bd_nz"], ["bd_idx"], perm=[1, 0]),
    ]
    for i, name in enumerate(("n", "y", "x")):
        post += [
            helper.make_node("Gather", ["bd_nz", f"ax{i}"], [f"bd_{name}2"], axis=0),
            helper.make_node("Squeeze", [f"bd_{name}2", "ax0"], [f"bd_{name}"]),
        ]
    for axis, coord in (("ry", "bd_y"), ("cx", "bd_x")):
        for name in ("i0", "i1", "w0", "w1"):
            post.append(helper.make_node("Gather", [f"{axis}_{name}", coord], [f"bd_{axis}_{name}"], axis=0))
        for name in ("w0", "w1"):
            post.append(helper.make_node("Unsqueeze", [f"bd_{axis}_{name}", "ax1"], [f"bd_{axis}_{name}c"]))
    post += [
        helper.make_node("Mul", ["bd_n", "hw"], ["bd_base"]),
        helper.make_node("Reshape", [logits, "class_rows"], ["logits_rows"]),
    ]
    for r in ("0", "1"):
        post += [
            helper.make_node("Mul", [f"bd_ry_i{r}", "w_i"], [f"bd_row{r}"]),
            helper.make_node("Add", ["bd_base", f"bd_row{r}"], [f"bd_b{r}"]),
        ]
        for c in ("0", "1"):
            post += [
                helper.make_node("Add", [f"bd_b{r}", f"bd_cx_i{c}"], [f"bd_f{r}{c}"]),
                helper.make_node("Gather", ["logits_rows", f"bd_f{r}{c}"], [f"bd_v{r}{c}_t"], axis=0),
                helper.make_node("Cast", [f"bd_v{r}{c}_t"], [f"bd_v{r}{c}"], to=onnx.TensorProto.FLOAT),
                helper.make_node("Mul", [f"bd_cx_w{c}c", f"bd_v{r}{c}"], [f"bd_t{r}{c}"]),
            ]
        post += [helper.make_node("Add", [f"bd_t{r}0", f"bd_t{r}1"], [f"bd_row_val{r}"]),
                 helper.make_node("Mul", [f"bd_ry_w{r}c", f"bd_row_val{r}"], [f"bd_s{r}"])]
    post += [
        helper.make_node("Add", ["bd_s0", "bd_s1"], ["bd_logits"]),
        helper.make_node("ArgMax", ["bd_logits"], ["bd_am"], axis=1, keepdims=0),
        helper.make_node("Cast", ["bd_am"], ["bd_lab"], to=onnx.TensorProto.UINT8),
        helper.make_node("ScatterND", ["lab_coarse", "bd_idx", "bd_lab"], ["lab_full"]),
        helper.make_node("Squeeze", ["lab_full", "ax3"], [OUTPUT_NAME]),
    ]
    new_graph = helper.make_graph(
        pre + list(graph.node) + post, "bisenetv2_pipeline",
        [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.UINT8, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.UINT8, ["N", "H", "W"])],
        initializer=list(graph.initializer) + inits,
    )
    out = helper.make_model(new_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bisenet-rt")
    out.ir_version = plain.ir_version
    return out


def _metadata(config: ExportConfig, num_classes: int, source_sha256: str) -> dict[str, str]:
    return {
        "bisenet_rt.graph": "plain" if config.plain else "pipeline",
        "bisenet_rt.classes": json.dumps(list(class_names(num_classes))),
        "bisenet_rt.mean_rgb": json.dumps(list(MEAN_RGB)),
        "bisenet_rt.std_rgb": json.dumps(list(STD_RGB)),
        "bisenet_rt.model_size": format_size(config.model_size),
        "bisenet_rt.precision": config.precision.value,
        "bisenet_rt.source_sha256": source_sha256,
    }


def read_metadata(proto: "onnx.ModelProto") -> dict[str, str]:
    """The bisenet_rt.* metadata of an exported graph, without the prefix."""
    return {p.key.split(".", 1)[1]: p.value for p in proto.metadata_props if p.key.startswith("bisenet_rt.")}


def export_onnx(model: "torch.nn.Module", path: str | os.PathLike | None, config: ExportConfig = ExportConfig(),
                *, source_sha256: str = "random-init") -> "onnx.ModelProto":
    """Export `model` (aux heads are never exported) as configured; write to `path` when given.

    The file is written atomically and checked with onnx.checker first.
    """
    import onnx

    num_classes = int(model.num_classes)
    proto = export_plain(model, config.model_size)
    if config.precision is Precision.FP16:
        proto = convert_to_fp16(proto)
    if not config.plain:
        proto = build_pipeline(proto, config, num_classes)
    for key, value in _metadata(config, num_classes, source_sha256).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(proto.SerializeToString())
        os.replace(tmp, path)
    return proto
