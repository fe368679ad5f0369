"""The one contract every runtime backend fulfils, so the Segmenter and the bench never branch on type.

Public methods validate input and state, then call the backend's private implementation
(as Polygraphy's runners do). Backends are context managers that own their sessions and buffers.
"""
from __future__ import annotations

import abc
import os
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..artifacts import ArtifactInfo
from ..errors import ClosedError, ArtifactError, InputError, UnsupportedError
from .frames import check_out, check_size
from ..sizes import check_depth
from .submission import DEFAULT_DEPTH, Pending, ThreadSubmitter

__all__ = ["Backend"]


class Backend(abc.ABC):
    """Runs the pipeline graph: uint8 N x H x W x 3 BGR frames -> uint8 N x H x W labels.

    What opens it, builds for it and says whether it can run here is its `BackendSpec` (`backends/<name>/`).
    `depth` is the most submissions in flight (`submit`); backends size their requests and lanes by it.
    """

    #: Short name used by `--backend` and reports (its spec's name).
    name: ClassVar[str] = ""

    def __init__(self, path: str | os.PathLike, *, depth: int = DEFAULT_DEPTH) -> None:
        self.path = Path(path)
        self.depth = check_depth(depth, "depth (submissions in flight)", InputError)
        self._lifetime = threading.Lock()  # `close` against `submit`: a submission after close is refused
        if not self.path.exists():
            raise ArtifactError(f"{self.path}: no such file; build one with 'bisenet-rt build' or export one with "
                                  "'bisenet-rt export -o PATH.onnx'")
        self._closed = False
        self._submitter: ThreadSubmitter | None = None

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

    # -- running ---------------------------------------------------------------------------------
    #: Submissions in flight at most (`submit`), fixed when the backend is opened.
    depth: int

    def infer(self, batch: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Labels for a C-contiguous uint8 N x H x W x 3 batch (validated by the Segmenter's `as_batch`).

        With `out` (a writable C-contiguous uint8 N x H x W array) the labels are written there and
        `out` is returned; backends that can write into it directly do (no extra copy).
        """
        self._check(batch, out)
        return self._infer_into(batch, out)

    def _check(self, batch: np.ndarray, out: np.ndarray | None) -> None:
        self._refuse_if_closed()
        info = self.info
        check_size(batch.shape, info.min_size, info.max_size, info.max_batch, self.path.name)
        if out is not None:
            check_out(out, batch.shape[:3])

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise ClosedError(f"{self.name} backend for {self.path.name} is closed; open a new Segmenter")

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Backend-specific inference on a validated batch."""

    def _infer_into(self, batch: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """Inference into `out` when given; the default copies the backend's result there."""
        labels = self._infer(batch)
        if out is None:
            return labels
        np.copyto(out, labels)
        return out

    def submit(self, batch: np.ndarray, out: np.ndarray | None = None, *, copy: bool = True) -> Pending:
        """Start inference on a validated batch and return at once; `.result()` gives the labels.

        Checked here, at submission, as `infer` checks. At most `depth` submissions are in flight;
        this backend runs them on a thread pool (TensorRT overrides it with CUDA streams). `copy`
        takes the batch's pixels now, so the caller may change its buffer at once; without it the
        buffer is read while the submission runs. After `close` (also racing it) ClosedError.
        """
        self._check(batch, out)
        if copy:
            batch = batch.copy()
        with self._lifetime:
            self._refuse_if_closed()
            if self._submitter is None:
                self._submitter = ThreadSubmitter(self._infer_into, self.depth, f"the {self.name} backend for "
                                                  f"{self.path.name}")
            submitter = self._submitter
        return submitter.submit(batch, out)

    @property
    def most_in_flight(self) -> int:
        """The most submissions that were in flight at once so far."""
        return self._submitter.most_in_flight if self._submitter is not None else 0

    def infer_device(self, frames: Any, labels: Any, *, stream: int | None = None) -> None:
        """Run on device buffers (objects with `__cuda_array_interface__`) without host copies."""
        raise UnsupportedError(f"the {self.name} backend works on host arrays only; device buffers need a "
                                  "TensorRT engine ('bisenet-rt build --backend tensorrt')")

    def last_device_time_ms(self) -> float | None:
        """Device-only time of the last call (CUDA events), where the backend measures it."""
        return None

    def versions(self) -> dict[str, str]:
        """Library versions this backend runs on, for reports."""
        return {}

    # -- lifetime ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Wait for submissions in flight, then release sessions, buffers and streams; safe to call twice."""
        with self._lifetime:
            if self._closed:
                return
            self._closed = True
            submitter = self._submitter
        if submitter is not None:
            submitter.close()
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
