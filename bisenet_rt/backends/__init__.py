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
           "open_backend", "parse_device", "device_options"]

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


def parse_device(device: str) -> tuple[str, int | None]:
    """'cpu' -> ('cpu', None), 'cuda' -> ('cuda', None), 'cuda:N' -> ('cuda', N); ConfigError otherwise."""
    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        return "cpu", None
    if kind == "cuda" and (not index or index.isdigit()):
        return "cuda", int(index) if index else None
    raise ConfigError(f"unknown device {device!r}; choose cpu, cuda or cuda:N (N: the GPU's index), or auto")


#: Each kind of device in words, and where it can run an artifact (said when an artifact cannot run on it).
_DEVICE_WORDS = {"cpu": "the CPU", "cuda": "a CUDA GPU"}
_RUNS_ON = {"cuda": "on a GPU, use a TensorRT engine (.engine), a checkpoint (.pth) or an ONNX graph with "
                    "onnxruntime-gpu",
            "cpu": "on the CPU, use the ONNX graph it was built from (.onnx), an OpenVINO IR (.xml) or the checkpoint"}


def device_options(spec: BackendSpec, device: str | None) -> dict[str, Any]:
    """The constructor options that put `spec`'s runtime on `device` ('cpu', 'cuda', 'cuda:N'; None or 'auto': where
    the artifact implies); ConfigError in one line where that backend cannot run there."""
    if device is None or device == "auto":
        return {}
    kind, index = parse_device(device)
    if kind not in spec.devices:
        raise ConfigError(f"device {device}: {spec.title} artifacts run on "
                          f"{' or '.join(_DEVICE_WORDS[d] for d in spec.devices)} only; {_RUNS_ON[kind]}")
    if len(spec.devices) > 1:
        return {"device": device}
    if index:
        raise ConfigError(f"device {device}: {spec.title} runs on the current CUDA device; choose GPU {index} with "
                          f"CUDA_VISIBLE_DEVICES={index} (it is then cuda:0) and device cuda")
    return {}


def open_backend(path: str | os.PathLike, backend: str = "auto", *, device: str | None = None,
                 **options: Any) -> Backend:
    """Open an artifact with the named backend, or the one its suffix implies for `auto`, on `device` ('cpu', 'cuda',
    'cuda:N'; None: where the artifact implies); `options` go to its constructor (`depth` for every backend;
    `precision`, `threads`, ... where the backend takes them)."""
    spec = spec_for_path(path) if backend == "auto" else spec_named(backend)
    placed = device_options(spec, device)
    missing = spec.availability()
    if missing:
        raise BackendUnavailableError(f"the {spec.name} backend cannot run here: {missing}")
    if Path(path).suffix.lower() not in spec.opens:
        raise ArtifactError(f"{path}: the {spec.name} backend opens {', '.join(spec.opens)} files")
    return spec.runtime()(path, **{**placed, **options})
