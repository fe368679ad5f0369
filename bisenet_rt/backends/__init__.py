"""Runtime backends behind one interface, chosen in one place: `open_backend`.

Backend modules import their heavy libraries themselves, so importing this package is cheap.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailableError, ConfigError, EngineLoadError
from .base import Backend

__all__ = ["Backend", "BACKENDS", "backend_class", "open_backend", "backend_for_path"]

#: name -> "module:Class"; imported only when used.
BACKENDS: dict[str, str] = {
    "tensorrt": "bisenet_rt.backends.tensorrt:TensorRTBackend",
    "onnxruntime": "bisenet_rt.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "bisenet_rt.backends.openvino:OpenVINOBackend",
    "torch": "bisenet_rt.backends.torch:TorchBackend",
}

#: Which backend opens a suffix when none is named.
_BY_SUFFIX: dict[str, str] = {
    ".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt",
    ".onnx": "onnxruntime", ".ort": "onnxruntime",
    ".xml": "openvino",
    ".pt": "torch", ".pth": "torch", ".ckpt": "torch",
}


def backend_class(name: str) -> type[Backend]:
    """The Backend class registered under `name`."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def backend_for_path(path: str | os.PathLike) -> str:
    """The backend that opens this artifact by default, from its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in _BY_SUFFIX:
        raise EngineLoadError(f"{path}: unknown artifact type {suffix or '(no suffix)'!r}; expected one of "
                              f"{', '.join(sorted(_BY_SUFFIX))}")
    return _BY_SUFFIX[suffix]


def open_backend(path: str | os.PathLike, backend: str = "auto", **options: Any) -> Backend:
    """Open an artifact with the named backend, or the one its suffix implies for `auto`."""
    name = backend_for_path(path) if backend == "auto" else backend
    cls = backend_class(name)
    missing = cls.availability()
    if missing:
        raise BackendUnavailableError(f"the {name} backend cannot run here: {missing}")
    if Path(path).suffix.lower() not in cls.suffixes:
        raise EngineLoadError(f"{path}: the {name} backend opens {', '.join(cls.suffixes)} files")
    return cls(path, **options)
