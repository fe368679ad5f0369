"""TensorRT backend (GPU): a deserialized engine run with cuda-python on one CUDA stream."""
from __future__ import annotations

import os

from .base import Backend

__all__ = ["TensorRTBackend", "tensorrt_availability"]


def tensorrt_availability() -> str | None:
    """None when TensorRT, the CUDA runtime bindings and a GPU are all present; else what is missing."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python module is not installed (pip install .[gpu], TensorRT 10 or 11)"
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "the CUDA runtime bindings are not installed (pip install cuda-python)"
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0:
        return f"no CUDA driver or GPU is usable ({cudart.cudaGetErrorString(err)[1].decode()})"
    if count == 0:
        return "no CUDA GPU is visible"
    return None


class TensorRTBackend(Backend):
    """Runs a serialized TensorRT engine built by `bisenet-rt build --backend tensorrt`."""

    name = "tensorrt"
    suffixes = (".engine", ".plan", ".trt")

    @classmethod
    def availability(cls) -> str | None:
        return tensorrt_availability()

    def __init__(self, path: str | os.PathLike) -> None:  # completed in the runtime work
        super().__init__(path)
        raise NotImplementedError("TensorRT backend is being written")
