"""`Segmenter`: frames in, label maps out, whatever backend runs underneath."""
from __future__ import annotations

import collections
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, overload

import numpy as np

from .artifacts import RANDOM_WEIGHTS, RANDOM_WEIGHTS_CURE, newest_artifact
from .backends import Backend, open_backend
from .classes import palette
from .errors import ArtifactError, InputError
from .families import CheckpointFamily, family_named
from .backends.frames import array_batch, as_batch
from .precision import Precision
from .settings import engines_dir
from .sizes import check_depth
from .backends.submission import DEFAULT_DEPTH, Pending

__all__ = ["Segmenter"]

_log = logging.getLogger(__name__)


class Segmenter:
    """Semantic segmentation of BGR uint8 frames with a built artifact.

    `Segmenter("engines/bisenetv2_fp16.engine")(frame)` returns an H x W uint8 label map at the
    frame's own size; a list of frames or an N x H x W x 3 array returns one map per frame.
    The artifact's suffix picks the backend (`.engine` TensorRT, `.onnx` ONNX Runtime, `.xml`
    OpenVINO, `.pt`/`.pth` the PyTorch reference) unless `backend` names one.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, backend: str = "auto", depth: int = DEFAULT_DEPTH,
                 **options: Any) -> None:
        if path is None:
            path = newest_artifact()
            if path is None:
                raise ArtifactError(f"no artifact given and none built under {engines_dir()}/; run "
                                      "'bisenet-rt build' first or pass a path")
        check_depth(depth, "depth (submissions in flight)", InputError)  # before anything heavy is loaded
        self._backend: Backend = open_backend(path, backend, depth=depth, **options)
        if self.random_weights:  # the facts say so: nothing this artifact labels means anything
            _log.warning(f"{self.path}: {RANDOM_WEIGHTS}; {RANDOM_WEIGHTS_CURE}")

    @overload
    def __call__(self, frames: np.ndarray, out: np.ndarray | None = None) -> np.ndarray: ...

    @overload
    def __call__(self, frames: Sequence[np.ndarray], out: None = None) -> list[np.ndarray]: ...

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray],
                 out: np.ndarray | None = None) -> np.ndarray | list[np.ndarray]:
        """Labels for one frame (H x W), a batch array (N x H x W) or a list of frames (list of H x W).

        `out`: a writable uint8 array shaped like the labels (H x W, or N x H x W for a batch array);
        the labels are written there and `out` is returned. Copies that remain: frames not in pinned
        memory (`bisenet_rt.pinned_frames`) are staged into one on the TensorRT backend, and labels
        are copied into `out` where the backend cannot write there directly (TensorRT into a pinned
        `out` and ONNX Runtime write in place).
        """
        batch, single = as_batch(frames)
        if isinstance(batch, list) or (out is not None and isinstance(frames, (list, tuple))):
            if out is not None:
                raise InputError("out= takes one frame or an N x H x W x 3 array, not a list of frames")
            return [self._backend.infer(b)[0] for b in batch]
        labels = self._backend.infer(batch, _batch_out(out, single))
        if single:
            return out if out is not None else labels[0]
        return list(labels) if isinstance(frames, (list, tuple)) else labels

    def submit(self, frames: np.ndarray, out: np.ndarray | None = None, *, copy: bool = True) -> Pending:
        """Start segmenting one frame (H x W x 3) or batch array (N x H x W x 3); return at once.

        `pending.result()` waits and returns what `seg(frames, out)` would. Input is checked here, with
        the same errors as a call. At most `depth` submissions are in flight: a further `submit`
        waits for the oldest to finish, so memory stays bounded. The frame's pixels are copied here,
        so its buffer may be reused at once; `copy=False` skips that copy, and then the frame must stay
        unchanged until `result()` returns. After `close()` (also one racing this call) ClosedError.
        """
        if isinstance(frames, (list, tuple)):
            raise InputError("submit takes one frame or an N x H x W x 3 array; submit a list frame by frame")
        batch, single = array_batch(frames)
        private = not np.may_share_memory(batch, frames)  # made contiguous: a copy already
        pending = self._backend.submit(batch, _batch_out(out, single), copy=copy and not private)
        return _SinglePending(pending, out) if single else pending

    def stream(self, frames: Iterable[np.ndarray], *, copy: bool = True) -> Iterator[np.ndarray]:
        """Labels of each frame of an iterable, in order, with up to `depth` frames in flight.

        Submissions stay in flight: frame k+1 is handed in while frame k computes (on TensorRT, its upload
        overlaps; on CPU backends, a worker thread runs it). A bad frame (or an error of the iterable)
        is raised after the labels of every good frame before it. `copy` as for `submit`.
        """
        queue: collections.deque[Pending] = collections.deque()
        failure: Exception | None = None
        source = iter(frames)
        while failure is None:
            try:
                frame = next(source)
            except StopIteration:
                break
            except Exception as exc:  # raised below, after the frames already in flight
                failure = exc
                break
            if len(queue) >= self._backend.depth:
                yield queue.popleft().result()
            try:
                queue.append(self.submit(frame, copy=copy))
            except Exception as exc:
                failure = exc
        while queue:
            yield queue.popleft().result()
        if failure is not None:
            raise failure

    def infer_device(self, frames: Any, labels: Any, *, stream: int | None = None) -> None:
        """Segment device-resident frames into a device-resident label buffer (TensorRT backend).

        Both arguments are objects exposing `__cuda_array_interface__` (PyTorch, CuPy tensors):
        uint8 N x H x W x 3 frames and a uint8 N x H x W output, used without copies.
        """
        self._backend.infer_device(frames, labels, stream=stream)

    @property
    def depth(self) -> int:
        """Submissions in flight at most (`submit`, `stream`)."""
        return self._backend.depth

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
    def family(self) -> CheckpointFamily:
        """The checkpoint family of the weights inside: their normalization and published protocol."""
        return family_named(self._backend.info.family)

    @property
    def random_weights(self) -> bool:
        """Whether the artifact's facts say its weights were never trained (labels then mean nothing)."""
        return self._backend.info.random_weights

    @property
    def backend(self) -> Backend:
        """The backend running the artifact (`.name`, `.versions()`, device timing, its own counters)."""
        return self._backend

    @property
    def device(self) -> str:
        return self._backend.device

    @property
    def path(self) -> Path:
        return self._backend.path

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        weights = f", weights={RANDOM_WEIGHTS!r}" if self.random_weights else ""
        return (f"Segmenter({str(self.path)!r}, backend={self.backend.name!r}, precision={self.precision.value!r}, "
                f"device={self.device!r}{weights})")


def _batch_out(out: np.ndarray | None, single: bool) -> np.ndarray | None:
    """A single frame's H x W `out` as the 1 x H x W the backends take (a view: writes land in `out`)."""
    if out is None or not single:
        return out
    if not isinstance(out, np.ndarray) or out.ndim != 2:
        shape = getattr(out, "shape", None)
        raise InputError(f"out for one frame must be an H x W uint8 array, got {type(out).__name__} {shape}")
    return out[None]


class _SinglePending:
    """A one-frame submission: its result is H x W, as a call's."""

    def __init__(self, pending: Pending, out: np.ndarray | None) -> None:
        self._pending, self._out = pending, out

    def result(self, timeout: float | None = None) -> np.ndarray:
        labels = self._pending.result(timeout)
        return self._out if self._out is not None else labels[0]

    def done(self) -> bool:
        return self._pending.done()
