"""What an artifact (engine, ONNX graph, IR, checkpoint) is, and the one place that opens one.

Engines carry a JSON sidecar next to them (`model.engine` -> `model.engine.json`), so plain
`trtexec` can still load the engine; exported ONNX graphs carry the same facts in metadata_props.
`open_artifact` reads either kind for every backend, builder and exporter, with the same checks.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .atomic import write_atomic
from .classes import DEFAULT_MODEL_SIZE
from .errors import ArtifactError
from .families import DEFAULT_FAMILY, OWN_WEIGHTS, CheckpointFamily, Normalization, family_named
from .graph.prepost import PostForm
from .precision import Precision
from .sizes import format_size, parse_size

if TYPE_CHECKING:
    import onnx

__all__ = ["ArtifactInfo", "Artifact", "open_artifact", "load_onnx", "read_metadata", "newest_artifact",
           "sidecar_path", "read_sidecar", "write_sidecar", "info_from_sidecar", "artifact_sha256",
           "artifact_files", "load_json", "graph_facts",
           "INPUT_NAME", "OUTPUT_NAME", "METADATA_PREFIX", "ARTIFACT_SUFFIXES", "RANDOM_INIT", "RANDOM_WEIGHTS",
           "RANDOM_WEIGHTS_CURE"]

#: The pipeline graph's one input (N x H x W x 3 BGR uint8) and one output (N x H x W uint8 labels).
INPUT_NAME = "frames"
OUTPUT_NAME = "labels"
#: Prefix of the bisenet-rt facts among an ONNX graph's metadata_props.
METADATA_PREFIX = "bisenet_rt."
#: Suffixes of built artifacts a command finds on its own (TensorRT engine, OpenVINO IR, ONNX).
ARTIFACT_SUFFIXES = (".engine", ".xml", ".onnx")
_REEXPORT = "re-export it with 'bisenet-rt export'"
_REBUILD = "re-export it with 'bisenet-rt export' or rebuild it with 'bisenet-rt build'"
#: Bounds on the JSON read from sidecars and graph metadata (a sidecar is a few kilobytes, three levels deep).
MAX_JSON_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
#: The pipeline graph's labels are uint8.
MAX_CLASSES = 255
#: Graph constants that hold the model size (h, w, 3) and the number of classes the arg-max ranges over.
_MODEL_HWC = "pre/model_hwc"
_CLASSES = "post/classes"
_PLAIN = ("the Segmenter needs the pipeline graph: 'bisenet-rt export -o PATH.onnx' without --plain")


@dataclasses.dataclass(frozen=True)
class ArtifactInfo:
    """The facts of an artifact, one schema for the ONNX metadata and the sidecar (`to_dict` / `from_dict`).

    `min_size`, `max_size` (w, h) and `max_batch` bound the frames it takes (None: any); `normalization`
    is what the graph does to pixels before the model (the checkpoint family's, unless stated);
    `post` the post-processing layout of the graph; `quantization` the INT8 facts (weight grid, target
    CPU class, calibration), None for a float artifact.
    """

    classes: tuple[str, ...]
    model_size: tuple[int, int] = DEFAULT_MODEL_SIZE
    precision: Precision = Precision.FP32
    source_sha256: str = "unknown"
    min_size: tuple[int, int] | None = None
    max_size: tuple[int, int] | None = None
    max_batch: int | None = None
    family: str = DEFAULT_FAMILY.name  # checkpoint family (`families`): normalization and published protocol
    normalization: Normalization | None = None  # None: the family's
    post: PostForm | None = None
    quantization: Mapping[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def pixel_normalization(self) -> Normalization:
        """How the graph normalizes pixels: as stated, else as the checkpoint family does."""
        return self.normalization or family_named(self.family).normalization

    @property
    def random_weights(self) -> bool:
        """Whether the weights inside were never trained (built or exported without a checkpoint)."""
        return self.source_sha256 == RANDOM_INIT

    @property
    def published_family(self) -> CheckpointFamily | None:
        """The family whose published accuracy these weights may have: None for random weights, for weights this
        project trained (`families.OWN_WEIGHTS`, the demo model) and for a class count other than the family's.

        Any other checkpoint of a family's layout is taken as possibly the published one: a checkpoint file
        does not say who trained it, so notes about the published protocol say "the published ones score".
        """
        family = family_named(self.family)
        if self.random_weights or self.source_sha256 in OWN_WEIGHTS or self.classes != family.classes:
            return None
        return family

    def to_dict(self) -> dict[str, Any]:
        """The facts as JSON values ('WxH' sizes, lists, numbers); None-valued facts are left out."""
        facts = {
            "classes": list(self.classes), "model_size": format_size(self.model_size),
            "precision": self.precision.value, "source_sha256": self.source_sha256,
            "min_size": format_size(self.min_size) if self.min_size else None,
            "max_size": format_size(self.max_size) if self.max_size else None,
            "max_batch": self.max_batch, "family": self.family,
            "normalization": self.pixel_normalization.to_dict(),
            "post": self.post.value if self.post else None,
            "quantization": dict(self.quantization) if self.quantization is not None else None,
        }
        return {k: v for k, v in facts.items() if v is not None}

    @classmethod
    def from_dict(cls, facts: Mapping[str, Any]) -> "ArtifactInfo":
        """Read the facts `to_dict` wrote (a sidecar's 'info' section, or parsed ONNX metadata); every fact is
        checked (`checked`), and a missing or malformed one is an ArtifactError."""
        try:
            info = cls(
                classes=facts["classes"], model_size=parse_size(facts.get("model_size", DEFAULT_MODEL_SIZE)),
                precision=Precision.parse(facts.get("precision", "fp32")),
                source_sha256=str(facts.get("source_sha256", "unknown")),
                min_size=_optional(parse_size, facts.get("min_size")),
                max_size=_optional(parse_size, facts.get("max_size")),
                max_batch=facts.get("max_batch"),  # checked (and made an int) by `checked`
                family=str(facts.get("family", DEFAULT_FAMILY.name)),
                normalization=_optional(Normalization.from_dict, facts.get("normalization")),
                post=_optional(PostForm, facts.get("post")),
                quantization=_optional(_mapping, facts.get("quantization")))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ArtifactError(f"artifact facts are incomplete or invalid ({exc}); {_REBUILD}") from None
        return info.checked()

    def to_metadata(self) -> dict[str, str]:
        """The facts as ONNX metadata_props (prefixed keys; JSON text where the value is not a string)."""
        return {METADATA_PREFIX + k: v if isinstance(v, str) else json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> "ArtifactInfo":
        """Read the facts `to_metadata` wrote (keys without the prefix, as `read_metadata` gives them)."""
        try:
            facts = {k: load_json(v, f"the '{k}' fact") if k in _JSON_FACTS else v for k, v in meta.items()}
        except ValueError as exc:  # json.JSONDecodeError too
            raise ArtifactError(f"artifact facts are invalid ({exc}); {_REBUILD}") from None
        for legacy, (low, high) in (("frame_size", ("min_size", "max_size")), ("batch", ("max_batch", None))):
            if legacy in facts:  # graphs exported before the one schema: a fixed frame size or batch
                facts.setdefault(low, facts[legacy] if high else load_json(facts[legacy], legacy))
                if high:
                    facts.setdefault(high, facts[legacy])
        return cls.from_dict(facts)

    def checked(self) -> "ArtifactInfo":
        """This info, once every fact read from a file is within sane bounds; ArtifactError names the one that is not."""
        from .sizes import check_batch, check_frame_size, check_model_size

        try:
            if not isinstance(self.classes, (list, tuple)) or not self.classes:
                raise ValueError(f"it names no classes ({self.classes!r})")
            if len(self.classes) > MAX_CLASSES or not all(isinstance(c, str) for c in self.classes):
                raise ValueError(f"its classes must be at most {MAX_CLASSES} names (labels are uint8), got "
                                 f"{len(self.classes)} entries")
            check_model_size(self.model_size)
            for name in ("min_size", "max_size"):
                if getattr(self, name) is not None:
                    check_frame_size(getattr(self, name), name)
            max_batch = None if self.max_batch is None else check_batch(self.max_batch, "max_batch")
            family_named(self.family)
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"artifact metadata is invalid: {exc}; {_REBUILD}") from None
        return dataclasses.replace(self, classes=tuple(self.classes), max_batch=max_batch)

    def with_profile(self, min_size: tuple[int, int] | None, max_size: tuple[int, int] | None,
                     max_batch: int | None) -> "ArtifactInfo":
        return dataclasses.replace(self, min_size=min_size, max_size=max_size, max_batch=max_batch)


#: Facts stored as JSON text in ONNX metadata (the others are plain strings).
_JSON_FACTS = frozenset({"classes", "max_batch", "normalization", "quantization"})
#: `source_sha256` of weights that were never trained.
RANDOM_INIT = "random-init"
#: What every command and the Segmenter say about an artifact whose facts say its weights are random.
RANDOM_WEIGHTS = "random weights: predictions are meaningless"
#: Where to go instead, said after RANDOM_WEIGHTS.
RANDOM_WEIGHTS_CURE = ("build from a checkpoint: 'bisenet-rt build --weights CKPT' (the demo model: "
                       "bisenet_rt/assets/demo_bisenetv2_synth.pth)")


def _optional(parse: Callable[[Any], Any], value: Any) -> Any:
    return None if value is None else parse(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def load_json(text: str | bytes, what: str) -> Any:
    """Parse JSON read from a file, bounded in size (MAX_JSON_BYTES) and nesting (MAX_JSON_DEPTH); ValueError
    says which bound was passed."""
    if len(text) > MAX_JSON_BYTES:
        raise ValueError(f"{what} is {len(text)} bytes of JSON, more than the {MAX_JSON_BYTES} a bisenet-rt file holds")
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    depth = deepest = 0
    for bracket in re.sub(r'"(?:[^"\\]|\\.)*"', "", text):  # strings cannot nest
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                raise ValueError(f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels")
        elif bracket in "]}":
            depth -= 1
    return json.loads(text)


def sidecar_path(artifact: str | os.PathLike) -> Path:
    """`engines/x.engine` -> `engines/x.engine.json`."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def artifact_files(artifact: str | os.PathLike) -> list[Path]:
    """The files one artifact is made of: an OpenVINO IR's .xml and .bin, else the file itself."""
    artifact = Path(artifact)
    return [artifact, artifact.with_suffix(".bin")] if artifact.suffix.lower() == ".xml" else [artifact]


def artifact_sha256(artifact: str | os.PathLike) -> str:
    """SHA-256 over the artifact's files, in order: what its sidecar describes."""
    digest = hashlib.sha256()
    for part in artifact_files(artifact):
        with open(part, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def write_sidecar(artifact: str | os.PathLike, sidecar: dict[str, Any]) -> Path:
    """Write the JSON sidecar of an artifact atomically, last, with the artifact's own hash in it.

    Artifact then sidecar: a build cut off in between leaves a sidecar that does not match, which
    `read_sidecar` refuses, instead of a new artifact described by the old facts.
    """
    sidecar = {**sidecar, "artifact_sha256": artifact_sha256(artifact)}
    return write_atomic(sidecar_path(artifact), (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode())


def read_sidecar(artifact: str | os.PathLike, *, required: bool = True) -> dict[str, Any] | None:
    """Read an artifact's JSON sidecar; a missing one is an error only when `required`."""
    path = sidecar_path(artifact)
    if not path.is_file():
        if required:
            raise ArtifactError(f"{artifact}: its metadata file {path.name} is missing; rebuild with 'bisenet-rt build'")
        return None
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes, more than the {MAX_JSON_BYTES} a sidecar holds")
        data = load_json(path.read_bytes(), "the sidecar")
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise ArtifactError(f"{path}: unreadable metadata ({exc}); rebuild with 'bisenet-rt build'") from None
    if not isinstance(data, dict) or not isinstance(data.get("info"), dict):
        raise ArtifactError(f"{path}: not a bisenet-rt sidecar (no 'info' section); rebuild with 'bisenet-rt build'")
    expected = data.get("artifact_sha256")
    if expected is not None and all(p.is_file() for p in artifact_files(artifact)):
        if artifact_sha256(artifact) != expected:
            raise ArtifactError(f"{artifact}: does not match its metadata file {path.name} (the artifact was "
                                  "replaced, or a build was cut off between the two); rebuild it with "
                                  "'bisenet-rt build'")
    return data


def info_from_sidecar(data: dict[str, Any]) -> ArtifactInfo:
    """The ArtifactInfo stored in a sidecar's 'info' section."""
    try:
        return ArtifactInfo.from_dict(data["info"])
    except ArtifactError as exc:
        raise ArtifactError(f"sidecar 'info' section: {exc}") from None


def read_metadata(proto: "onnx.ModelProto") -> dict[str, str]:
    """The bisenet_rt.* metadata of an exported graph, without the prefix."""
    return {p.key[len(METADATA_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)}


def load_onnx(path: str | os.PathLike, *, external_data: bool = False,
              error: type[Exception] = ArtifactError) -> "onnx.ModelProto":
    """Read an ONNX file (weights in external files left unread unless `external_data`); unreadable -> `error`."""
    import onnx

    if not Path(path).is_file():
        raise error(f"{path}: no such file")
    try:
        return onnx.load(str(path), load_external_data=external_data)
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise error(f"{path}: not a readable ONNX file ({exc.__class__.__name__}); {_REEXPORT}") from None


@dataclasses.dataclass(frozen=True)
class Artifact:
    """An opened artifact: its facts, its ONNX graph when it is one (and it was kept), its sidecar when it has one."""

    path: Path
    info: ArtifactInfo
    sidecar: dict[str, Any] | None
    graph: "onnx.ModelProto | None" = None  # None for TensorRT engines and OpenVINO IR, or not kept


def open_artifact(path: str | os.PathLike, *, keep_graph: bool = False, sidecar: bool = True) -> Artifact:
    """Open any artifact the Segmenter runs and read its facts, refusing what is not the pipeline graph.

    ONNX graphs must be the uint8 `frames` -> labels pipeline with bisenet-rt metadata (a sidecar
    beside one takes precedence, unless `sidecar` is False: a build trusts only the graph); engines
    and IR need their sidecar. The ONNX graph is returned only with `keep_graph` (it can be large).
    """
    path = Path(path)
    if path.suffix.lower() not in (".onnx", ".ort"):
        stored = read_sidecar(path)
        assert stored is not None  # required=True raises instead
        try:
            return Artifact(path=path, info=info_from_sidecar(stored), sidecar=stored)
        except ArtifactError as exc:
            raise ArtifactError(f"{path}: {exc}") from None
    import onnx

    proto = load_onnx(path)
    meta = read_metadata(proto)
    inputs = [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input]
    if meta.get("graph") == "plain" or inputs != [(INPUT_NAME, onnx.TensorProto.UINT8)]:
        raise ArtifactError(f"{path}: this is a plain model graph (float input {inputs}); {_PLAIN}")
    outputs = [(o.name, o.type.tensor_type.elem_type, len(o.type.tensor_type.shape.dim)) for o in proto.graph.output]
    if outputs != [(OUTPUT_NAME, onnx.TensorProto.UINT8, 3)]:
        raise ArtifactError(f"{path}: its outputs {[o[0] for o in outputs]} are not the pipeline's one uint8 "
                              f"N x H x W label map '{OUTPUT_NAME}'; {_REEXPORT}")
    stored = read_sidecar(path, required=False) if sidecar else None
    try:
        if stored is not None:
            info = info_from_sidecar(stored)
            if meta and info.classes != ArtifactInfo.from_metadata(meta).classes:
                raise ArtifactError(f"its sidecar {sidecar_path(path).name} names other classes than the graph does; "
                                      "rebuild it with 'bisenet-rt build'")
        elif meta:
            info = ArtifactInfo.from_metadata(meta)
        else:
            raise ArtifactError("no bisenet-rt metadata; export the graph with 'bisenet-rt export'")
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    _check_against_graph(info, proto, path)
    return Artifact(path=path, info=info, sidecar=stored, graph=proto if keep_graph else None)


def graph_facts(proto: "onnx.ModelProto") -> tuple[tuple[int, int] | None, int | None]:
    """(model size (w, h), number of classes the arg-max ranges over) read from the pipeline graph's own
    constants; None where the graph does not hold them."""
    from onnx import numpy_helper

    values = {t.name: t for t in proto.graph.initializer if t.name in (_MODEL_HWC, _CLASSES)}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] in (_MODEL_HWC, _CLASSES):
            values.update({node.output[0]: a.t for a in node.attribute if a.name == "value"})
    found = {name: [int(v) for v in numpy_helper.to_array(t).ravel()] for name, t in values.items()}
    hwc, classes = found.get(_MODEL_HWC), found.get(_CLASSES)
    size = (hwc[1], hwc[0]) if hwc is not None and len(hwc) == 3 else None
    return size, classes[0] if classes is not None and len(classes) == 1 else None


def _check_against_graph(info: ArtifactInfo, proto: "onnx.ModelProto", path: Path) -> None:
    """Refuse metadata that says another model size or number of classes than the graph computes with."""
    size, classes = graph_facts(proto)
    if size is not None and size != info.model_size:
        raise ArtifactError(f"{path}: its metadata says model size {format_size(info.model_size)}, but the graph "
                              f"resizes frames to {format_size(size)}; {_REBUILD}")
    if classes is not None and classes != info.num_classes:
        raise ArtifactError(f"{path}: its metadata names {info.num_classes} classes, but the graph's labels range "
                              f"over {classes}; {_REBUILD}")


def newest_artifact(directory: str | os.PathLike | None = None) -> Path | None:
    """The most recently built artifact under `directory` (default: the engines folder), or None.

    Left out: the exported graphs builds start from (`*.src.onnx`) and hidden files (temporary names).
    """
    from .settings import engines_dir

    folder = Path(directory) if directory is not None else engines_dir()
    if not folder.is_dir():
        return None
    found = [p for p in folder.iterdir() if p.suffix in ARTIFACT_SUFFIXES and not p.name.endswith(".src.onnx")
             and not p.name.startswith(".") and p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
