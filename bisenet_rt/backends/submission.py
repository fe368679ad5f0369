"""Pipelined submission: frames handed in ahead of their results, with a bounded number in flight.

`Segmenter.submit(frame)` returns a `Pending` at once; `pending.result()` waits for that frame's
labels. At most `depth` submissions are in flight: the next `submit` waits for the oldest to finish,
so memory stays bounded however fast frames arrive. The TensorRT backend pipelines on CUDA streams
(upload, inference and download of consecutive frames overlap); every other backend runs submissions
on a small thread pool through `ThreadSubmitter`, where what overlaps is Python, copies and the parts
of a frame the runtime does not parallelize.
"""
from __future__ import annotations

import concurrent.futures
import threading
from typing import Callable, Protocol

import numpy as np

from ..errors import ClosedError

__all__ = ["Pending", "ThreadSubmitter", "DEFAULT_DEPTH"]

#: Submissions in flight by default: one computing while the next is handed in.
DEFAULT_DEPTH = 2


class Pending(Protocol):
    """A submitted batch: `result()` waits for and returns its labels (the `out` array when one was given)."""

    def result(self, timeout: float | None = None) -> np.ndarray: ...

    def done(self) -> bool: ...


class _FuturePending:
    def __init__(self, future: concurrent.futures.Future) -> None:
        self._future = future

    def result(self, timeout: float | None = None) -> np.ndarray:
        return self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()


class ThreadSubmitter:
    """Runs `infer(batch, out)` for submissions on `depth` worker threads, at most `depth` at a time."""

    def __init__(self, infer: Callable[[np.ndarray, "np.ndarray | None"], np.ndarray], depth: int = DEFAULT_DEPTH,
                 name: str = "segmenter") -> None:
        self.depth = depth
        self._infer = infer
        self._name = name
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=depth, thread_name_prefix="segmenter-submit")
        self._slots = threading.BoundedSemaphore(depth)
        self._lock = threading.Lock()
        self._closed = False
        self.in_flight = 0
        #: The most submissions that were ever in flight at once (for tests and reports).
        self.most_in_flight = 0

    def submit(self, batch: np.ndarray, out: np.ndarray | None = None) -> Pending:
        """Queue one validated batch; blocks while `depth` earlier ones are still running.

        Raises ClosedError once `close` has begun, also for a submission that was waiting for a slot.
        """
        self._slots.acquire()
        with self._lock:
            if self._closed:
                self._slots.release()
                raise ClosedError(f"{self._name} was closed; open a new Segmenter to submit more frames")
            try:
                future = self._pool.submit(self._infer, batch, out)
            except BaseException:
                self._slots.release()
                raise
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        future.add_done_callback(self._finished)
        return _FuturePending(future)

    def _finished(self, _: object) -> None:
        with self._lock:
            self.in_flight -= 1
        self._slots.release()

    def close(self) -> None:
        """Refuse further submissions, wait for what is in flight, then stop the workers."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True)
