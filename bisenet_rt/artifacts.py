"""What an artifact (engine, ONNX graph, IR, checkpoint) is: classes, sizes, precision, provenance.

Engines carry a JSON sidecar next to them (`model.engine` -> `model.engine.json`), so plain
`trtexec` can still load the engine; exported ONNX graphs carry the same facts in metadata_props.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from .classes import DEFAULT_MODEL_SIZE
from .errors import EngineLoadError
from .families import DEFAULT_FAMILY, FAMILIES
from .precision import Precision
from .sizes import format_size, parse_size

__all__ = ["ArtifactInfo", "sidecar_path", "read_sidecar", "write_sidecar", "write_atomic", "info_from_sidecar"]


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


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def write_sidecar(artifact: str | os.PathLike, sidecar: dict[str, Any]) -> Path:
    """Write the JSON sidecar of an artifact atomically."""
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
    if not isinstance(data, dict) or "info" not in data:
        raise EngineLoadError(f"{path}: not a bisenet-rt sidecar (no 'info' section); rebuild with 'bisenet-rt build'")
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
