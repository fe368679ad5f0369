"""What an artifact (engine, ONNX graph, IR, checkpoint) is, and the one place that opens one.

Engines carry a JSON sidecar next to them (`model.engine` -> `model.engine.json`), so plain
`trtexec` can still load the engine; exported ONNX graphs carry the same facts in metadata_props.
`open_pipeline` reads either kind for every backend, builder and exporter, with the same checks.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import write_atomic
from .classes import DEFAULT_MODEL_SIZE
from .errors import EngineLoadError
from .families import DEFAULT_FAMILY, FAMILIES
from .precision import Precision
from .sizes import format_size, parse_size

if TYPE_CHECKING:
    import onnx

__all__ = ["ArtifactInfo", "Pipeline", "open_pipeline", "load_onnx", "read_metadata", "newest_artifact",
           "sidecar_path", "read_sidecar", "write_sidecar", "info_from_sidecar", "artifact_sha256",
           "artifact_files",
           "INPUT_NAME", "OUTPUT_NAME", "METADATA_PREFIX", "ARTIFACT_SUFFIXES"]

#: The pipeline graph's one input (N x H x W x 3 BGR uint8) and one output (N x H x W uint8 labels).
INPUT_NAME = "frames"
OUTPUT_NAME = "labels"
#: Prefix of the bisenet-rt facts among an ONNX graph's metadata_props.
METADATA_PREFIX = "bisenet_rt."
#: Suffixes of built artifacts a command finds on its own (TensorRT engine, OpenVINO IR, ONNX).
ARTIFACT_SUFFIXES = (".engine", ".xml", ".onnx")
_REEXPORT = "re-export it with 'bisenet-rt export'"
_PLAIN = ("the Segmenter needs the pipeline graph: 'bisenet-rt export -o PATH.onnx' without --plain")


@dataclasses.dataclass(frozen=True)
class ArtifactInfo:
    """The facts every backend reports about the artifact it runs."""

    classes: tuple[str, ...]
    model_size: tuple[int, int] = DEFAULT_MODEL_SIZE
    precision: Precision = Precision.FP32
    source_sha256: str = "unknown"
    min_size: tuple[int, int] | None = None  # smallest frame (w, h) the artifact accepts; None = any
    max_size: tuple[int, int] | None = None  # largest frame (w, h); None = any
    max_batch: int | None = None
    family: str = DEFAULT_FAMILY.name  # checkpoint family (`families`): normalization and published protocol

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> "ArtifactInfo":
        """Build from the bisenet_rt.* ONNX metadata (prefix removed) or a sidecar's flat strings."""
        try:
            classes = tuple(json.loads(meta["classes"]))
            frame = parse_size(meta["frame_size"]) if meta.get("frame_size") else None  # a fixed-size graph
            return cls(classes=classes, model_size=parse_size(meta.get("model_size", format_size(DEFAULT_MODEL_SIZE))),
                       precision=Precision.parse(meta.get("precision", "fp32")),
                       source_sha256=meta.get("source_sha256", "unknown"), min_size=frame, max_size=frame,
                       max_batch=int(meta["batch"]) if meta.get("batch") else None,
                       family=meta.get("family", DEFAULT_FAMILY.name))
        except (KeyError, ValueError, TypeError) as exc:
            raise EngineLoadError(f"artifact metadata is incomplete or invalid ({exc}); re-export it with "
                                  "'bisenet-rt export' or 'bisenet-rt build'") from None

    def with_profile(self, min_size: tuple[int, int] | None, max_size: tuple[int, int] | None,
                     max_batch: int | None) -> "ArtifactInfo":
        return dataclasses.replace(self, min_size=min_size, max_size=max_size, max_batch=max_batch)

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes), "model_size": format_size(self.model_size),
            "precision": self.precision.value, "source_sha256": self.source_sha256,
            "min_size": format_size(self.min_size) if self.min_size else None,
            "max_size": format_size(self.max_size) if self.max_size else None,
            "max_batch": self.max_batch, "family": self.family,
            **({"normalization": FAMILIES[self.family].normalization.metadata()} if self.family in FAMILIES else {}),
        }


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
            raise EngineLoadError(f"{artifact}: its metadata file {path.name} is missing; rebuild with 'bisenet-rt build'")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EngineLoadError(f"{path}: unreadable metadata ({exc}); rebuild with 'bisenet-rt build'") from None
    if not isinstance(data, dict) or not isinstance(data.get("info"), dict):
        raise EngineLoadError(f"{path}: not a bisenet-rt sidecar (no 'info' section); rebuild with 'bisenet-rt build'")
    expected = data.get("artifact_sha256")
    if expected is not None and all(p.is_file() for p in artifact_files(artifact)):
        if artifact_sha256(artifact) != expected:
            raise EngineLoadError(f"{artifact}: does not match its metadata file {path.name} (the artifact was "
                                  "replaced, or a build was cut off between the two); rebuild it with "
                                  "'bisenet-rt build'")
    return data


def info_from_sidecar(data: dict[str, Any]) -> ArtifactInfo:
    """Rebuild the ArtifactInfo stored in a sidecar's 'info' section."""
    raw = data["info"]
    try:
        info = ArtifactInfo.from_metadata({"classes": json.dumps(raw["classes"]), "model_size": raw["model_size"],
                                           "precision": raw["precision"], "source_sha256": raw.get("source_sha256", "unknown"),
                                           "family": raw.get("family", DEFAULT_FAMILY.name)})
        return info.with_profile(parse_size(raw["min_size"]) if raw.get("min_size") else None,
                                 parse_size(raw["max_size"]) if raw.get("max_size") else None, raw.get("max_batch"))
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineLoadError(f"sidecar 'info' section is invalid ({exc}); rebuild with 'bisenet-rt build'") from None


def read_metadata(proto: "onnx.ModelProto") -> dict[str, str]:
    """The bisenet_rt.* metadata of an exported graph, without the prefix."""
    return {p.key[len(METADATA_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)}


def load_onnx(path: str | os.PathLike, *, external_data: bool = False,
              error: type[Exception] = EngineLoadError) -> "onnx.ModelProto":
    """Read an ONNX file (weights in external files left unread unless `external_data`); unreadable -> `error`."""
    import onnx

    if not Path(path).is_file():
        raise error(f"{path}: no such file")
    try:
        return onnx.load(str(path), load_external_data=external_data)
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise error(f"{path}: not a readable ONNX file ({exc.__class__.__name__}); {_REEXPORT}") from None


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """An opened pipeline artifact: its facts, its ONNX graph when it is one, its sidecar when it has one."""

    path: Path
    info: ArtifactInfo
    metadata: dict[str, str]  # the graph's bisenet_rt.* metadata; {} for engines and IR
    sidecar: dict[str, Any] | None
    graph: "onnx.ModelProto | None" = None  # None for TensorRT engines and OpenVINO IR

    @property
    def quantization(self) -> str | None:
        """The INT8 graph's quantization facts (JSON text), from the graph or its sidecar; None if float."""
        if "quantization" in self.metadata:
            return self.metadata["quantization"]
        stored = (self.sidecar or {}).get("quantization")
        return json.dumps(stored) if stored is not None else None


def open_pipeline(path: str | os.PathLike, *, keep_graph: bool = False, sidecar: bool = True) -> Pipeline:
    """Open any artifact the Segmenter runs and read its facts, refusing what is not the pipeline.

    ONNX graphs must be the uint8 `frames` -> labels pipeline with bisenet-rt metadata (a sidecar
    beside one takes precedence, unless `sidecar` is False: builders trust only the graph); engines
    and IR need their sidecar. The ONNX graph is returned only with `keep_graph` (it can be large).
    """
    path = Path(path)
    if path.suffix.lower() not in (".onnx", ".ort"):
        stored = read_sidecar(path)
        assert stored is not None  # required=True raises instead
        return Pipeline(path=path, info=info_from_sidecar(stored), metadata={}, sidecar=stored)
    import onnx

    proto = load_onnx(path)
    meta = read_metadata(proto)
    inputs = [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input]
    if meta.get("graph") == "plain" or inputs != [(INPUT_NAME, onnx.TensorProto.UINT8)]:
        raise EngineLoadError(f"{path}: this is a plain model graph (float input {inputs}); {_PLAIN}")
    outputs = [(o.name, o.type.tensor_type.elem_type, len(o.type.tensor_type.shape.dim)) for o in proto.graph.output]
    if outputs != [(OUTPUT_NAME, onnx.TensorProto.UINT8, 3)]:
        raise EngineLoadError(f"{path}: its outputs {[o[0] for o in outputs]} are not the pipeline's one uint8 "
                              f"N x H x W label map '{OUTPUT_NAME}'; {_REEXPORT}")
    stored = read_sidecar(path, required=False) if sidecar else None
    if stored is not None:
        info = info_from_sidecar(stored)
        if meta and info.classes != ArtifactInfo.from_metadata(meta).classes:
            raise EngineLoadError(f"{path}: its sidecar {sidecar_path(path).name} names other classes than the graph "
                                  "does; rebuild it with 'bisenet-rt build'")
    elif meta:
        info = ArtifactInfo.from_metadata(meta)
    else:
        raise EngineLoadError(f"{path}: no bisenet-rt metadata; export the graph with 'bisenet-rt export'")
    return Pipeline(path=path, info=info, metadata=meta, sidecar=stored, graph=proto if keep_graph else None)


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
