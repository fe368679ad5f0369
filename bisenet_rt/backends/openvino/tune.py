"""OpenVINO graph tuning: channels-last work the CPU plugin runs slowly moved to the channels-first side of its
transpose (same values), applied when an IR is built and when an ONNX graph is opened directly; and, for BF16
inference, the arg-max kept in BF16 (a compile-time mark, set on every load)."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["tune_graph", "bf16_argmax", "BF16_TAIL_KEY"]

_NHWC = [0, 2, 3, 1]  # transpose order NCHW -> NHWC
_NCHW = [0, 3, 1, 2]  # and back


def _const_values(output: Any) -> list | None:
    node = output.get_node()
    if node.get_type_name() != "Constant":
        return None
    return node.get_data().tolist()


def _i64(values: Any) -> Any:
    import openvino.opset11 as ops

    return ops.constant(np.array(values, np.int64))


def _is_transpose(node: Any, perm: list[int]) -> bool:
    return node.get_type_name() == "Transpose" and _const_values(node.input_value(1)) == perm


def _interpolate_like(op: Any, data: Any, axis_order: list[int], name: str) -> Any:
    """`op` (an Interpolate over all four axes) applied to `data`, its sizes/scales reordered by `axis_order`."""
    import openvino.opset11 as ops

    attrs = op.get_attributes()
    per_axis = ops.gather(op.input_value(1), _i64(axis_order), _i64(0))
    return ops.interpolate(data, per_axis, mode=attrs["mode"], shape_calculation_mode=attrs["shape_calculation_mode"],
                           coordinate_transformation_mode=attrs["coordinate_transformation_mode"],
                           nearest_mode=attrs["nearest_mode"], antialias=attrs["antialias"],
                           cube_coeff=attrs["cube_coeff"], name=name)


def tune_graph(model: Any) -> list[str]:
    """Move channels-last work the CPU plugin runs slowly to the channels-first side of its transpose; same values.

    The pipeline graph resizes frames and logits channels-last (cheap for ONNX Runtime and TensorRT),
    but OpenVINO's CPU kernels for an NHWC Interpolate, and for an arg-max over 19 contiguous
    channels, are several times slower than their NCHW kernels. Interpolate (separable per axis) and
    TopK commute with a transpose, so each runs on the NCHW side; the arg-max reads an N x C x HW
    view, so the plugin gives it a planar layout (in a channels-contiguous one its TopK is ~10x
    slower). Returns what was changed.
    """
    import openvino.opset11 as ops

    changed = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Interpolate" or op.get_input_size() != 2:
            continue
        attrs = op.get_attributes()
        if any(attrs["pads_begin"]) or any(attrs["pads_end"]):
            continue
        name = op.get_friendly_name()
        source = op.input_value(0).get_node()
        consumers = [i.get_node() for i in op.output(0).get_target_inputs()]
        if _is_transpose(source, _NHWC):  # Interpolate(NHWC(x)) -> NHWC(Interpolate(x))
            nchw = _interpolate_like(op, source.input_value(0), _NCHW, f"{name}/nchw")
            op.output(0).replace(ops.transpose(nchw, _i64(_NHWC)).output(0))
            changed.append(f"{name}: Interpolate moved before the NHWC transpose")
        elif consumers and all(_is_transpose(c, _NCHW) for c in consumers):  # NCHW(Interp(x)) -> Interp(NCHW(x))
            nchw = _interpolate_like(op, ops.transpose(op.input_value(0), _i64(_NCHW)), _NCHW,
                                     f"{name}/nchw")
            for consumer in consumers:
                consumer.output(0).replace(nchw.output(0))
            changed.append(f"{name}: Interpolate moved after the NCHW transpose")
    for op in model.get_ordered_ops():
        if op.get_type_name() != "TopK" or op.get_attributes().get("axis") not in (3, -1):
            continue
        source = op.input_value(0).get_node()
        if not _is_transpose(source, _NHWC):
            continue
        attrs = op.get_attributes()
        logits = source.input_value(0)
        shape = ops.shape_of(logits, "i64")
        planar = ops.reshape(logits, _i64([0, 0, -1]), special_zero=True)  # N x C x HW
        top = ops.topk(planar, op.input_value(1), axis=1, mode=attrs["mode"], sort=attrs["sort"],
                       index_element_type=attrs["index_element_type"], stable=attrs.get("stable", False),
                       name=f"{op.get_friendly_name()}/nchw")
        n_k_h_w = ops.concat([ops.gather(shape, _i64([0]), _i64(0)), _i64([-1]),
                              ops.gather(shape, _i64([2, 3]), _i64(0))], 0)
        for i in range(2):
            nkhw = ops.reshape(top.output(i), n_k_h_w, special_zero=False)
            op.output(i).replace(ops.transpose(nkhw, _i64(_NHWC)).output(0))
        changed.append(f"{op.get_friendly_name()}: arg-max moved before the NHWC transpose")
    if changed:
        model.validate_nodes_and_infer_types()
    return changed


#: The CPU plugin's per-node rt_info key that lifts its rule of running a graph's tail in FP32 under BF16 inference
#: (read as a bool in `Node::Node`; a string "1" converts). IR files do not keep it, so it is set after every read.
BF16_TAIL_KEY = "enforceBF16evenForGraphTail"
#: Nodes the plugin always computes in BF16 under BF16 inference (its "significant" types): their output is BF16,
#: so an arg-max reading it in BF16 compares the very same values.
_BF16_PRODUCERS = ("MatMul", "Interpolate", "Convolution")


def bf16_argmax(model: Any) -> list[str]:
    """Mark each arg-max (TopK) that reads a BF16-computed node to run in BF16 too; same labels, less work.

    Under BF16 inference the plugin keeps the graph's tail (every node after the last MatMul,
    Interpolate or convolution) in FP32, so each band's BF16 logits were widened to FP32 by a
    reorder (twice the bytes) before the arg-max: about a third of the post-processing. The
    values the arg-max compares are the BF16 ones either way. Returns what was marked.
    """
    marked = []
    for op in model.get_ordered_ops():
        if op.get_type_name() == "TopK" and op.input_value(0).get_node().get_type_name() in _BF16_PRODUCERS:
            op.get_rt_info()[BF16_TAIL_KEY] = "1"
            marked.append(f"{op.get_friendly_name()}: arg-max in BF16")
    return marked
