"""bisenet-rt: real-time BiSeNetV2 semantic segmentation on TensorRT, ONNX Runtime, OpenVINO and PyTorch.

Importing the package is cheap: torch, onnxruntime, tensorrt and CUDA load only in the module
that needs them.
"""
from __future__ import annotations

from typing import Any

from .errors import (BackendUnavailableError, BisenetError, BuildError, CheckpointError, DataError, EngineLoadError,
                     ExportError, InputError)
from .precision import Precision

__version__ = "0.1.0"
__all__ = ["Segmenter", "Precision", "BisenetError", "InputError", "CheckpointError", "ExportError", "BuildError",
           "BackendUnavailableError", "EngineLoadError", "DataError", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Segmenter":
        from .segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'bisenet_rt' has no attribute {name!r}")
