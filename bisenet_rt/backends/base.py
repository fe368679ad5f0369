"""The one contract every runtime backend fulfils, so the Segmenter and the bench never branch on type.

Public methods validate input and state, then call the backend's private implementation
(as Polygraphy's runners do). Backends are context managers that own their sessions and buffers.
"""
from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..artifacts import ArtifactInfo
from ..errors import BisenetError, EngineLoadError
from ..frames import check_size

__all__ = ["Backend", "physical_cores"]


def physical_cores() -> int:
    """Physical CPU cores (hyper-threads share an FPU, so more threads than cores only add contention)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except ImportError:
        n = None
    return max(1, n or os.cpu_count() or 1)


class Backend(abc.ABC):
    """Runs the pipeline graph: uint8 N x H x W x 3 BGR frames -> uint8 N x H x W labels."""

    #: Short name used by `--backend` and reports.
    name: ClassVar[str] = ""
    #: File suffixes this backend opens.
    suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise EngineLoadError(f"{self.path}: no such file; build one with 'bisenet-rt build' or export one with "
                                  "'bisenet-rt export -o PATH.onnx'")
        self._closed = False

    # -- what every backend reports -------------------------------------------------------------
    #: Set by every backend's constructor.
    _info: ArtifactInfo

    @property
    def info(self) -> ArtifactInfo:
        """Classes, model size, precision and accepted frame range of the loaded artifact."""
        return self._info

    @property
    @abc.abstractmethod
    def device(self) -> str:
        """Where inference runs, in words (CPU model or GPU name)."""

    @classmethod
    def availability(cls) -> str | None:
        """None when this backend can run here, else one line naming what is missing."""
        return None

    # -- running ---------------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Labels for a C-contiguous uint8 N x H x W x 3 batch (validated by the Segmenter's `as_batch`)."""
        if self._closed:
            raise BisenetError(f"{self.name} backend for {self.path.name} is closed")
        info = self.info
        check_size(batch.shape, info.min_size, info.max_size, info.max_batch, self.path.name)
        return self._infer(batch)

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Backend-specific inference on a validated batch."""

    def infer_device(self, frames: Any, labels: Any, *, stream: int | None = None) -> None:
        """Run on device buffers (objects with `__cuda_array_interface__`) without host copies."""
        raise NotImplementedError(f"the {self.name} backend works on host arrays only; device buffers need a "
                                  "TensorRT engine ('bisenet-rt build --backend tensorrt')")

    def last_device_time_ms(self) -> float | None:
        """Device-only time of the last call (CUDA events), where the backend measures it."""
        return None

    def versions(self) -> dict[str, str]:
        """Library versions this backend runs on, for reports."""
        return {}

    # -- lifetime ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Release sessions, buffers and streams; safe to call twice."""
        if not self._closed:
            self._closed = True
            self._close()

    def _close(self) -> None:
        """Backend-specific release; the default has nothing to free."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may already be gone
            pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, precision={self.info.precision.value}, device={self.device!r})"
