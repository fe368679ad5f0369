"""ONNX export: the bare model (`plain`) and the whole pipeline graph with pre/post-processing inside.

The pipeline graph takes uint8 N x H x W x 3 BGR frames and returns uint8 N x H x W class ids, with
dynamic N, H and W (or fixed ones, `ExportConfig.batch` / `frame_size`); it runs unchanged on ONNX
Runtime (CPU) and TensorRT. Precision is a property of the graph (TensorRT 11 is strongly typed): an
FP16 export has FP16 weights and activations. The nodes around the model live in `prepost`.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..artifacts import INPUT_NAME, METADATA_PREFIX, OUTPUT_NAME, RANDOM_INIT, ArtifactInfo
from ..atomic import write_atomic
from ..classes import DEFAULT_MODEL_SIZE
from ..errors import ExportError
from ..families import DEFAULT_FAMILY, Normalization, family_of
from ..precision import Precision
from ..sizes import check_frame_size, check_model_size
from ..post_form import PostForm

if TYPE_CHECKING:
    import onnx
    import torch

    from ..families import CheckpointFamily
    from .prepost import ModelUpsample

__all__ = ["ExportConfig", "export_onnx", "export_plain", "pipeline_graph", "convert_to_fp16", "export_facts", "add_facts",
           "num_classes_of", "PLAIN_INPUT_NAME", "PLAIN_OUTPUT_NAME", "OPSET", "GRAPH_KIND"]

PLAIN_INPUT_NAME = "input"
PLAIN_OUTPUT_NAME = "logits"
OPSET = 17
_MAX_CLASSES = 255  # labels are uint8
#: The metadata key that tells the pipeline graph ("pipeline") from the bare model ("plain").
GRAPH_KIND = "graph"
_ONNX_DTYPE = {Precision.FP32: 1, Precision.FP16: 10}  # onnx.TensorProto.FLOAT / FLOAT16


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What to export: precision, model input size (w, h), pipeline or plain graph.

    `frame_size` (w, h) and `batch` fix the pipeline's input dimensions (None: any size, any batch);
    a fixed graph accepts only those frames. Only batch 1 can be fixed: for more, keep N dynamic and
    bound it with the engine's profile (`bisenet-rt build --max-batch N`). `post` lays out the exact
    post-processing for the runtime (`PostForm`; each backend spec's `graph_forms` says which form its builds use).
    """

    precision: Precision = Precision.FP32
    model_size: tuple[int, int] = DEFAULT_MODEL_SIZE
    plain: bool = False
    frame_size: tuple[int, int] | None = None
    batch: int | None = None
    post: PostForm = PostForm.RESIZE

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", Precision.parse(self.precision))
        try:
            object.__setattr__(self, "post", PostForm(self.post))
        except ValueError:
            raise ExportError(f"unknown post-processing form {self.post!r}; choose one of: "
                              f"{', '.join(f.value for f in PostForm)}") from None
        try:
            object.__setattr__(self, "model_size", check_model_size(self.model_size))
            if self.frame_size is not None:
                object.__setattr__(self, "frame_size", check_frame_size(self.frame_size, "--frame-size",
                                                                        "no frame above it is accepted"))
        except ValueError as exc:
            raise ExportError(str(exc)) from None
        if self.batch not in (None, 1):
            raise ExportError(f"a fixed batch must be 1, got {self.batch}; for larger batches keep the batch dynamic "
                              "and set the engine's maximum with 'bisenet-rt build --max-batch N'")
        if self.plain and (self.frame_size is not None or self.batch is not None):
            raise ExportError("the plain graph takes model-size input; a fixed frame size or batch applies to the "
                              "pipeline graph only")
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
        # the TorchScript exporter's deprecation notices (its own and a helper's); it is pinned and tested
        warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning,
                                module=r"torch\.onnx")
        torch.onnx.export(model, (dummy,), buf, dynamo=False,  # type: ignore[arg-type]  # file objects work too opset_version=OPSET, do_constant_folding=True,
                          input_names=[PLAIN_INPUT_NAME], output_names=[PLAIN_OUTPUT_NAME],
                          dynamic_axes={PLAIN_INPUT_NAME: {0: "N"}, PLAIN_OUTPUT_NAME: {0: "N"}})
    proto = onnx.load_from_string(buf.getvalue())
    return _drop_identities(proto)


def _drop_identities(proto: "onnx.ModelProto") -> "onnx.ModelProto":
    """Remove the Identity nodes the exporter leaves on folded weights (rename their consumers' inputs)."""
    graph = proto.graph
    outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
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


_NOT_AN_UPSAMPLE = ("unexpected plain graph: its output is not a constant-scale bilinear Resize of the logits; "
                    "export it with 'bisenet-rt export --plain'")


def num_classes_of(model: "torch.nn.Module") -> int:
    """The number of classes a BiSeNetV2 (or anything with `num_classes`) predicts."""
    return int(getattr(model, "num_classes"))


def _detach_upsample(graph: "onnx.GraphProto") -> "ModelUpsample":
    """Remove the model's final x8 bilinear Resize (the graph output's producer) and describe it.

    The post-processing redoes it channels last, in the chosen `PostForm`; its constant scales go too.
    """
    from onnx import helper, numpy_helper

    from .prepost import ModelUpsample

    producer = {out: n for n in graph.node for out in n.output}
    node = producer.get(graph.output[0].name)
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute[0].name == "value"})
    if node is None or node.op_type != "Resize" or len(node.input) < 3:
        raise ExportError(_NOT_AN_UPSAMPLE)
    scales = consts.get(node.input[2])
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute} if scales is not None else {}
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    if (scales is None or scales.shape != (4,) or list(scales[:2]) != [1, 1] or scales[2] != scales[3]
            or scales[2] != int(scales[2]) or attrs.get("mode") != "linear"):
        raise ExportError(_NOT_AN_UPSAMPLE)
    graph.node.remove(node)
    if not any(node.input[2] in n.input for n in graph.node):
        scale_producer = producer.get(node.input[2])
        if scale_producer is not None:
            graph.node.remove(scale_producer)
        for init in [i for i in graph.initializer if i.name == node.input[2]]:
            graph.initializer.remove(init)
    return ModelUpsample(coarse=node.input[0], factor=int(scales[2]), attributes=attrs)


def _name_nodes(nodes: "list[onnx.NodeProto]") -> None:
    """Give every unnamed node a name (`model/<op>_<i>`); refuse duplicates, so errors name one node."""
    seen: set[str] = set()
    for i, node in enumerate(nodes):
        if not node.name:
            node.name = f"model/{node.op_type}_{i}"
        if node.name in seen:
            raise ExportError(f"two nodes of the graph are named {node.name!r}; node names must be unique")
        seen.add(node.name)


def _dims(config: ExportConfig) -> list:
    """N, H, W of the pipeline's input and output: fixed where the config pins them, else symbolic."""
    w, h = config.frame_size if config.frame_size is not None else ("W", "H")
    return [config.batch if config.batch is not None else "N", h, w]


def pipeline_graph(plain: "onnx.ModelProto", config: ExportConfig, num_classes: int,
                   normalization: Normalization = DEFAULT_FAMILY.normalization) -> "onnx.ModelProto":
    """Wrap a plain graph (FP32, FP16-typed or Q/DQ) with the in-graph pre- and post-processing of `prepost`.

    uint8 N x H x W x 3 BGR frames in, uint8 N x H x W class ids out; N, H, W symbolic unless the
    config fixes them. The model's own final x8 upsample moves into the post-processing (same
    function, laid out per `config.post`); the frames are normalized as `normalization` says (the
    weights' checkpoint family). Every node is named; `backends.tensorrt.conformance` checks the result.
    """
    import onnx
    from onnx import helper

    from .prepost import postprocess_nodes, preprocess_nodes

    if num_classes > _MAX_CLASSES:
        raise ExportError(f"the pipeline graph returns uint8 labels, so at most {_MAX_CLASSES} classes; got {num_classes}")
    fdt = _ONNX_DTYPE[config.precision]
    plain = onnx.ModelProto.FromString(plain.SerializeToString())
    graph = plain.graph
    upsample = _detach_upsample(graph)
    pre = preprocess_nodes(INPUT_NAME, graph.input[0].name, config.model_size, fdt, normalization)
    post = postprocess_nodes(upsample, OUTPUT_NAME, num_classes, config.model_size, fdt, pre, config.post)
    nodes = pre.part.nodes + list(graph.node) + post.nodes
    _name_nodes(nodes)
    n, h, w = _dims(config)
    new_graph = helper.make_graph(
        nodes, "bisenetv2_pipeline",
        [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.UINT8, [n, h, w, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.UINT8, [n, h, w])],
        initializer=list(graph.initializer) + pre.part.initializers + post.initializers,
    )
    out = helper.make_model(new_graph, opset_imports=list(plain.opset_import), producer_name="bisenet-rt")
    out.ir_version = plain.ir_version
    return out


def export_facts(config: ExportConfig, num_classes: int, source_sha256: str,
                 family: "CheckpointFamily" = DEFAULT_FAMILY) -> ArtifactInfo:
    """The facts of a graph exported as `config` from weights of `num_classes` classes and this checkpoint family."""
    return ArtifactInfo(classes=family.class_names(num_classes), model_size=config.model_size,
                        precision=config.precision, source_sha256=source_sha256, min_size=config.frame_size,
                        max_size=config.frame_size, max_batch=config.batch, family=family.name,
                        normalization=family.normalization, post=None if config.plain else config.post)


def add_facts(proto: "onnx.ModelProto", info: ArtifactInfo, *, plain: bool = False) -> None:
    """Write the facts into the graph's metadata, with what kind of graph it is (`GRAPH_KIND`)."""
    proto.metadata_props.add(key=METADATA_PREFIX + GRAPH_KIND, value="plain" if plain else "pipeline")
    for key, value in info.to_metadata().items():
        proto.metadata_props.add(key=key, value=value)


def export_onnx(model: "torch.nn.Module", path: str | os.PathLike | None, config: ExportConfig = ExportConfig(),
                *, source_sha256: str = RANDOM_INIT) -> "onnx.ModelProto":
    """Export `model` (aux heads are never exported) as configured; write to `path` when given.

    The normalization in the graph and the metadata (classes, mean/std, colour order, the protocol
    its weights were scored at) are those of the model's checkpoint family. The file is written
    atomically and checked with onnx.checker first.
    """
    import onnx

    num_classes = num_classes_of(model)
    family = family_of(model)
    proto = export_plain(model, config.model_size)
    if config.precision is Precision.FP16:
        proto = convert_to_fp16(proto)
    if not config.plain:
        proto = pipeline_graph(proto, config, num_classes, family.normalization)
    add_facts(proto, export_facts(config, num_classes, source_sha256, family), plain=config.plain)
    onnx.checker.check_model(proto)
    if path is not None:
        write_atomic(path, proto.SerializeToString())
    return proto
