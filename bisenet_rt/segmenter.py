"""`Segmenter`: frames in, label maps out, whatever backend runs underneath."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .backends import Backend, open_backend
from .classes import palette
from .errors import EngineLoadError
from .frames import as_batch
from .precision import Precision

__all__ = ["Segmenter", "newest_artifact", "ENGINES_DIR"]

#: Where `bisenet-rt build` writes artifacts (relative to the working directory unless set).
ENGINES_DIR = Path(os.environ.get("BISENET_RT_ENGINES", "engines"))
_ARTIFACT_SUFFIXES = (".engine", ".xml", ".onnx")


def newest_artifact(directory: str | os.PathLike = ENGINES_DIR) -> Path | None:
    """The most recently built artifact under `directory` (engines, IR, ONNX), or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    # *.src.onnx are the exported graphs builds start from, not built artifacts
    found = [p for p in directory.iterdir()
             if p.suffix in _ARTIFACT_SUFFIXES and not p.name.endswith(".src.onnx") and p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


class Segmenter:
    """Semantic segmentation of BGR uint8 frames with a built artifact.

    `Segmenter("engines/bisenetv2_fp16.engine")(frame)` returns an H x W uint8 label map at the
    frame's own size; a list of frames or an N x H x W x 3 array returns one map per frame.
    The artifact's suffix picks the backend (`.engine` TensorRT, `.onnx` ONNX Runtime, `.xml`
    OpenVINO, `.pt`/`.pth` the PyTorch reference) unless `backend` names one.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, backend: str = "auto", **options: Any) -> None:
        if path is None:
            path = newest_artifact()
            if path is None:
                raise EngineLoadError(f"no artifact given and none built under {ENGINES_DIR}/; run "
                                      "'bisenet-rt build' first or pass a path")
        self._backend: Backend = open_backend(path, backend, **options)

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Labels for one frame (H x W), a batch array (N x H x W) or a list of frames (list of H x W)."""
        batch, single = as_batch(frames)
        if isinstance(batch, list):
            return [self._backend.infer(b)[0] for b in batch]
        labels = self._backend.infer(batch)
        if single:
            return labels[0]
        return list(labels) if isinstance(frames, (list, tuple)) else labels

    def infer_device(self, frames: Any, labels: Any, *, stream: int | None = None) -> None:
        """Segment device-resident frames into a device-resident label buffer (TensorRT backend).

        Both arguments are objects exposing `__cuda_array_interface__` (PyTorch, CuPy tensors):
        uint8 N x H x W x 3 frames and a uint8 N x H x W output, used without copies.
        """
        self._backend.infer_device(frames, labels, stream=stream)

    # -- what was loaded ---------------------------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...]:
        return self._backend.info.classes

    @property
    def num_classes(self) -> int:
        return self._backend.info.num_classes

    @property
    def palette(self) -> np.ndarray:
        """num_classes x 3 uint8 RGB colours."""
        return np.asarray(palette(self.num_classes), dtype=np.uint8)

    @property
    def model_size(self) -> tuple[int, int]:
        """(width, height) the frames are resized to inside the graph."""
        return self._backend.info.model_size

    @property
    def precision(self) -> Precision:
        return self._backend.info.precision

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def device(self) -> str:
        return self._backend.device

    @property
    def path(self) -> Path:
        return self._backend.path

    @property
    def runner(self) -> Backend:
        """The backend object (for reports: versions, device timing)."""
        return self._backend

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Segmenter({str(self.path)!r}, backend={self.backend!r}, precision={self.precision.value!r}, "
                f"device={self.device!r})")
