"""bisenet-rt: real-time BiSeNetV2 semantic segmentation on TensorRT, ONNX Runtime, OpenVINO and PyTorch.

Importing the package is cheap: torch, onnxruntime, tensorrt and CUDA load only in the module
that needs them.
"""
from __future__ import annotations

from typing import Any

from .errors import (ArtifactError, BackendUnavailableError, BisenetError, BuildError, CheckpointError, DataError,
                     ExportError, InputError)
from .precision import Precision

__version__ = "0.1.0"
__all__ = ["Segmenter", "pinned_frames", "Precision", "BisenetError", "InputError", "CheckpointError", "ExportError", "BuildError",
           "BackendUnavailableError", "ArtifactError", "DataError", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Segmenter":
        from .segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'bisenet_rt' has no attribute {name!r}")


def pinned_frames(n: int, h: int, w: int) -> Any:
    """An uint8 N x H x W x 3 frame array in page-locked memory, for frames the TensorRT backend uploads in place.

    Decode into it (or copy once) and pass it, or a slice of it, to a Segmenter: no staging copy on the
    way to the GPU. Without CUDA it is an ordinary array that every backend takes.
    """
    from .backends.tensorrt.cuda import pinned_array

    return pinned_array((n, h, w, 3))
