"""Runtime backends, one unit each: a `BackendSpec` per backend (`backends/<name>/`), and the one place that opens
an artifact, `open_backend`.

Each spec says what its backend opens and builds and whether it can run here; its heavy modules (the
runtime library, the build step) are imported only when used, so importing this package is cheap.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailableError, ConfigError, ArtifactError
from . import onnxruntime, openvino, tensorrt
from . import torch as torch_backend
from .base import Backend
from .spec import BackendSpec, BuildConfig, GraphForm

__all__ = ["Backend", "BackendSpec", "BuildConfig", "GraphForm", "SPECS", "spec_named", "spec_for_path",
           "open_backend"]

#: Every backend by name; for a suffix several open (.onnx), the first one here opens it by default.
SPECS: dict[str, BackendSpec] = {spec.name: spec for spec in (tensorrt.SPEC, onnxruntime.SPEC, openvino.SPEC,
                                                              torch_backend.SPEC)}


def spec_named(name: str) -> BackendSpec:
    """The spec of the backend called `name`; ConfigError listing the choices otherwise."""
    if name not in SPECS:
        raise ConfigError(f"unknown backend {name!r}; choose one of: auto, {', '.join(SPECS)}")
    return SPECS[name]


def spec_for_path(path: str | os.PathLike) -> BackendSpec:
    """The spec of the backend that opens this artifact by default, from its suffix."""
    suffix = Path(path).suffix.lower()
    for spec in SPECS.values():
        if suffix in spec.opens:
            return spec
    known = sorted({s for spec in SPECS.values() for s in spec.opens})
    raise ArtifactError(f"{path}: unknown artifact type {suffix or '(no suffix)'!r}; expected one of {', '.join(known)}")


def open_backend(path: str | os.PathLike, backend: str = "auto", **options: Any) -> Backend:
    """Open an artifact with the named backend, or the one its suffix implies for `auto`; `options` go to its
    constructor (`depth` for every backend; `device`, `precision`, `threads`, ... where the backend takes them)."""
    spec = spec_for_path(path) if backend == "auto" else spec_named(backend)
    missing = spec.availability()
    if missing:
        raise BackendUnavailableError(f"the {spec.name} backend cannot run here: {missing}")
    if Path(path).suffix.lower() not in spec.opens:
        raise ArtifactError(f"{path}: the {spec.name} backend opens {', '.join(spec.opens)} files")
    return spec.runtime()(path, **options)
