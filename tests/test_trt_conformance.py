"""The TensorRT parser-rule check: it accepts every graph the TensorRT builder gets and rejects the
patterns the parser rejects (or that break static shapes), naming node, op, dtype and rule.

TensorRT is not installed here; `bisenet_rt.backends.tensorrt.conformance` is the proof. Its rules cite the
parser's source; these tests hold it to them on small hand-made graphs, one rule at a time.
"""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bisenet_rt.backends.tensorrt.conformance import RULES, SUPPORTED_TYPES, check_tensorrt, require_tensorrt
from bisenet_rt.errors import BuildError
from bisenet_rt.graph.export import ExportConfig, export_onnx
from bisenet_rt.post_form import PostForm
from bisenet_rt.precision import Precision
from conftest import street_frame

SMALL = (512, 256)  # model size (w, h) of the exported variants: the rules do not depend on it


def _rules(model: onnx.ModelProto) -> set[str]:
    return {v.rule.name for v in check_tensorrt(model)}


@pytest.fixture(scope="module")
def plains(confident_model):
    """The plain graphs every pipeline variant wraps: FP32, FP16-typed, and Q/DQ (calibrated on two frames)."""
    from bisenet_rt.graph.export import convert_to_fp16, export_plain
    from bisenet_rt.graph.qdq import quantize_plain

    fp32 = export_plain(confident_model, SMALL)
    frames = [street_frame(256, 512, seed=s) for s in (1, 2)]
    fp16 = convert_to_fp16(onnx.ModelProto.FromString(fp32.SerializeToString()))
    return {"fp32": fp32, "fp16": fp16, "int8": quantize_plain(fp32, frames, progress=False)}


VARIANTS = list(itertools.product(("fp32", "fp16", "int8"), [form.value for form in PostForm], ("dynamic", "fixed")))


@pytest.mark.parametrize("precision,post,dims", VARIANTS, ids=["-".join(v) for v in VARIANTS])
def test_every_exported_pipeline_conforms(plains, precision, post, dims):
    """Every pipeline the TensorRT builder can get, wrapped as `export_onnx` and `quantize_graph` wrap them."""
    from bisenet_rt.graph.export import pipeline_graph

    fixed = {"frame_size": (1024, 512), "batch": 1} if dims == "fixed" else {}
    graph_precision = "fp16" if precision == "fp16" else "fp32"
    proto = pipeline_graph(plains[precision], ExportConfig(precision=graph_precision, model_size=SMALL, post=post,
                                                           **fixed), 19)
    onnx.checker.check_model(proto)
    assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node) == (precision == "int8")
    assert check_tensorrt(proto) == []
    names = [n.name for n in proto.graph.node]
    assert all(names) and len(set(names)) == len(names)
    uint8 = {v.name for v in list(proto.graph.input) + list(proto.graph.output)}
    assert uint8 == {"frames", "labels"}


def test_the_exporter_output_conforms(confident_model):
    """`export_onnx` itself (metadata and checks included), not only `pipeline_graph`."""
    assert check_tensorrt(export_onnx(confident_model, None, ExportConfig(model_size=SMALL, precision="fp16"))) == []


def test_plain_export_conforms(confident_model):
    assert check_tensorrt(export_onnx(confident_model, None, ExportConfig(model_size=SMALL, plain=True))) == []


# -- hand-made graphs, each breaking one rule ------------------------------------------------------------
def _model(nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _frames(shape=("N", "H", "W", 3)):
    return helper.make_tensor_value_info("frames", TensorProto.UINT8, list(shape))


def _out(name="labels", dtype=TensorProto.UINT8):
    return helper.make_tensor_value_info(name, dtype, None)


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def _cast(src, dst, to, name):
    return helper.make_node("Cast", [src], [dst], to=to, name=name)


def test_uint8_into_gather_is_rejected_and_named():
    model = _model([helper.make_node("Gather", ["frames", "idx"], ["g"], axis=1, name="post/gather_labels"),
                    _cast("g", "f", TensorProto.FLOAT, "c1"), _cast("f", "labels", TensorProto.UINT8, "c2")],
                   [_frames()], [_out()], [_const("idx", np.array([0, 1], np.int64))])
    found = {(v.node, v.op, v.dtype, v.rule.name) for v in check_tensorrt(model)}
    assert found == {("post/gather_labels", "Gather", "UINT8", "uint8-read-by-cast"),  # reads the uint8 input
                     ("post/gather_labels", "Gather", "UINT8", "uint8-io-only")}       # and writes uint8
    (violation,) = [v for v in check_tensorrt(model) if v.rule.name == "uint8-read-by-cast" and v.op == "Gather"]
    text = str(violation)
    assert "post/gather_labels" in text and "Gather" in text and "UINT8" in text and "uint8-read-by-cast" in text


@pytest.mark.parametrize("op,extra_inputs,inits", [
    ("NonZero", [], []),
    ("Squeeze", ["axes"], [_const("axes", np.array([3], np.int64))]),
    ("Shape", [], []),
])
def test_uint8_into_other_ops_is_rejected(op, extra_inputs, inits):
    model = _model([helper.make_node(op, ["frames", *extra_inputs], ["y"], name="n")], [_frames()],
                   [_out("y", TensorProto.INT64)], inits)
    assert "uint8-read-by-cast" in _rules(model)


def test_uint8_into_scatternd_is_rejected():
    model = _model([helper.make_node("ScatterND", ["frames", "idx", "upd"], ["labels"], name="post/scatter")],
                   [_frames((1, 2, 2, 3)), helper.make_tensor_value_info("upd", TensorProto.UINT8, [1, 3])],
                   [_out()], [_const("idx", np.zeros((1, 3), np.int64))])
    assert "uint8-read-by-cast" in _rules(model)


def test_intermediate_uint8_is_rejected():
    """The old post-processing cast labels to UINT8 and then gathered them."""
    model = _model([_cast("frames", "f", TensorProto.FLOAT, "pre/to_float"),
                    _cast("f", "u", TensorProto.UINT8, "post/labels_u8"),
                    helper.make_node("Identity", ["u"], ["labels"], name="post/identity")],
                   [_frames()], [_out()])
    rules = {(v.node, v.rule.name) for v in check_tensorrt(model)}
    assert ("post/labels_u8", "uint8-io-only") in rules
    assert ("post/identity", "uint8-read-by-cast") in rules


def test_cast_int64_to_uint8_is_rejected():
    model = _model([_cast("frames", "f", TensorProto.FLOAT, "pre/to_float"),
                    helper.make_node("ArgMax", ["f"], ["ids"], axis=3, keepdims=0, name="post/argmax"),
                    _cast("ids", "labels", TensorProto.UINT8, "post/to_uint8")],
                   [_frames()], [_out()])
    (violation,) = check_tensorrt(model)
    assert (violation.node, violation.dtype, violation.rule.name) == ("post/to_uint8", "INT64", "uint8-cast-float")


def test_cast_int64_float_uint8_is_accepted():
    model = _model([_cast("frames", "f", TensorProto.FLOAT, "pre/to_float"),
                    helper.make_node("ArgMax", ["f"], ["ids"], axis=3, keepdims=0, name="post/argmax"),
                    _cast("ids", "idf", TensorProto.FLOAT, "post/to_float"),
                    _cast("idf", "labels", TensorProto.UINT8, "post/to_uint8")],
                   [_frames()], [_out()])
    assert check_tensorrt(model) == []


def test_nonzero_anywhere_is_rejected():
    model = _model([_cast("frames", "f", TensorProto.FLOAT, "pre/to_float"),
                    helper.make_node("NonZero", ["f"], ["nz"], name="post/boundaries")],
                   [_frames()], [_out("nz", TensorProto.INT64)])
    (violation,) = check_tensorrt(model)
    assert (violation.node, violation.op, violation.rule.name) == ("post/boundaries", "NonZero", "static-shapes")
    assert violation.rule.policy


def test_value_dependent_shape_input_is_rejected():
    """A Reshape whose target shape is computed from tensor values (not from shapes) is data-dependent."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    model = _model([helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT64, name="to_int"),
                    helper.make_node("Reshape", ["x", "xi"], ["y"], name="reshape_by_value")],
                   [x], [_out("y", TensorProto.FLOAT)])
    assert {v.node for v in check_tensorrt(model) if v.rule.name == "static-shapes"} == {"reshape_by_value"}


def test_shape_derived_shape_input_is_accepted():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    model = _model([helper.make_node("Shape", ["x"], ["s"], name="shape"),
                    helper.make_node("Slice", ["s", "zero", "one", "axis0"], ["n"], name="batch"),
                    helper.make_node("Concat", ["n", "four"], ["target"], axis=0, name="target"),
                    helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape_by_shape")],
                   [x], [_out("y", TensorProto.FLOAT)],
                   [_const("zero", np.array([0], np.int64)), _const("one", np.array([1], np.int64)),
                    _const("axis0", np.array([0], np.int64)), _const("four", np.array([4], np.int64))])
    assert check_tensorrt(model) == []


def test_unnamed_and_duplicate_nodes_are_rejected():
    model = _model([_cast("frames", "f", TensorProto.FLOAT, ""), _cast("f", "g", TensorProto.FLOAT16, "twice"),
                    _cast("g", "labels", TensorProto.UINT8, "twice")],
                   [_frames()], [_out()])
    details = [v.detail for v in check_tensorrt(model) if v.rule.name == "named-nodes"]
    assert len(details) == 2 and "no name" in details[0] and "also used" in details[1]


def _qdq_model(zero_point, scale=np.float32(0.1)):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    return _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
                   helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")],
                  [x], [_out("y", TensorProto.FLOAT)], [_const("s", scale), _const("z", zero_point)])


def test_symmetric_int8_qdq_is_accepted():
    assert check_tensorrt(_qdq_model(np.int8(0))) == []


@pytest.mark.parametrize("zero_point,scale", [(np.int8(3), np.float32(0.1)), (np.uint8(0), np.float32(0.1)),
                                              (np.int8(0), np.float32(-0.1))])
def test_asymmetric_uint8_or_negative_qdq_is_rejected(zero_point, scale):
    assert _rules(_qdq_model(zero_point, scale)) & {"qdq-zero-point", "qdq-scale"}


def test_resize_rules():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])

    def resize(scales, **attrs):
        return _model([helper.make_node("Resize", ["x", "", "sc"], ["y"], name="r", mode="linear", **attrs)],
                      [x], [_out("y", TensorProto.FLOAT)], [_const("sc", np.array(scales, np.float32))])

    assert check_tensorrt(resize([1, 1, 2, 2])) == []
    assert _rules(resize([2, 1, 2, 2])) == {"resize-linear-axes"}
    assert _rules(resize([1, 1, 2, 2], antialias=1)) == {"resize-attributes"}
    assert _rules(resize([1, 1, 2, 2], coordinate_transformation_mode="tf_crop_and_resize")) == {"resize-attributes"}


def test_op_outside_the_parser_is_rejected():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    model = _model([helper.make_node("Unique", ["x"], ["y"], name="u")], [x], [_out("y", TensorProto.FLOAT)])
    assert "op-supported" in _rules(model)


def test_unsupported_input_type_is_rejected():
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [2, 2])
    model = _model([helper.make_node("MatMul", ["x", "x"], ["y"], name="mm")], [x], [_out("y", TensorProto.INT64)])
    assert {(v.rule.name, v.dtype) for v in check_tensorrt(model)} == {("op-types", "INT64")}


def test_every_rule_names_its_source_and_versions():
    for rule in RULES.values():
        assert rule.source and rule.requires and rule.versions
        assert rule.policy or "onnx-tensorrt" in rule.source or "TensorRT" in rule.source, rule.name
    assert SUPPORTED_TYPES["Cast"] >= {"UINT8"} and "UINT8" not in SUPPORTED_TYPES["Shape"]


def test_require_tensorrt_raises_one_line_build_error():
    model = _model([helper.make_node("NonZero", ["frames"], ["nz"], name="post/boundaries")], [_frames()],
                   [_out("nz", TensorProto.INT64)])
    with pytest.raises(BuildError) as info:
        require_tensorrt(model, "bad.onnx")
    message = str(info.value)
    assert "\n" not in message and "bad.onnx" in message and "post/boundaries" in message and "static-shapes" in message


def test_tensorrt_build_checks_the_graph_before_tensorrt(tmp_path):
    """`build --backend tensorrt --onnx BAD` stops at the check, without TensorRT (it is not installed here)."""
    from bisenet_rt.backends import SPECS
    from bisenet_rt.builder import BuildConfig, BuildPlan, prepare
    from bisenet_rt.graph.export import add_facts, export_facts

    model = _model([_cast("frames", "f", TensorProto.FLOAT, "pre/to_float"),
                    helper.make_node("ArgMax", ["f"], ["ids"], axis=3, keepdims=0, name="post/argmax"),
                    _cast("ids", "labels", TensorProto.UINT8, "post/to_uint8")], [_frames()],
                   [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["N", "H", "W"])])
    add_facts(model, export_facts(ExportConfig(), 3, "test"))
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(BuildError, match="post/to_uint8.*uint8-cast-float"):
        prepare(BuildPlan(SPECS["tensorrt"], Precision.FP32, tmp_path / "bad.engine"),
                BuildConfig(backend="tensorrt", precision="fp32", onnx=path))
