"""Pre- and post-processing as compiled CPU kernels around the model part of the pipeline graph.

On a GPU the pipeline graph's own pre/post nodes are the fast form (TensorRT fuses them, the frame never
leaves the device). On a CPU each of those nodes passes full-size arrays through memory: the post-
processing writes 19 logits per output pixel and reads them back, the pre-processing converts the whole
frame to float before resizing it. The CPU backends (ONNX Runtime, OpenVINO) therefore run their artifact's
graph from the normalized model input to the coarse logits only, and do the rest here: `resize_normalize`
before and `upsample_argmax` after, the same functions (tested against the PyTorch oracle and the graph).

numba compiles the kernels (once per machine, then from its on-disk cache); without numba the graph's own
pre/post-processing runs. `uses_kernels` is where every CPU backend makes that choice.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from ...families import ChannelOrder, Normalization
from .resize_normalize import column_taps, kernel as resize_kernel
from .upsample_argmax import HALF_PIXEL_MODES, TAPS, axis_taps, kernels as upsample_kernels
from .axis import resize_taps

__all__ = ["CpuKernels", "PixelMap", "available", "uses_kernels", "PREPOST_CHOICES", "HALF_PIXEL_MODES"]

_log = logging.getLogger(__name__)
#: A CPU backend's `prepost=`: 'auto' runs the kernels where they can run (numba installed, the graph cut at its
#: model), 'kernels' insists on them, 'graph' runs the pipeline graph's own pre/post-processing.
PREPOST_CHOICES = ("auto", "kernels", "graph")


def available() -> str | None:
    """None when the kernels can run here (numba is installed), else one line saying what is missing."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return "numba is not installed (pip install numba, or pip install '.[cpu]')"
    return None


def uses_kernels(prepost: str, backend: str, blocker: str | None) -> bool:
    """Whether `backend` runs the kernels around its graph's model; `blocker` says why they cannot here (or None).

    'auto' falls back to the graph's own pre/post-processing with an info line saying why;
    'kernels' refuses to fall back; 'graph' never uses them.
    """
    from ...errors import BackendUnavailableError, ConfigError

    if prepost not in PREPOST_CHOICES:
        raise ConfigError(f"unknown prepost {prepost!r} for {backend}; choose one of: {', '.join(PREPOST_CHOICES)}")
    if prepost == "graph":
        return False
    if blocker is None:
        return True
    if prepost == "kernels":
        raise BackendUnavailableError(f"{backend}: the pre/post-processing kernels cannot run: {blocker}; open it "
                                      "with prepost='graph' (the graph's own) or prepost='auto'")
    _log.info("%s: the graph's own pre/post-processing runs (the CPU kernels cannot: %s)", backend, blocker)
    return False


@dataclasses.dataclass(frozen=True)
class PixelMap:
    """What a graph's pre-processing does to a resized pixel: model channel c = frame channel `source[c]` (frames
    are BGR) times `scale[c]` plus `shift[c]`. Read from the graph itself (`backends/*/run.py`), because a runtime's
    converter may have moved the channel swap into the first convolutions' weights."""

    scale: tuple[float, float, float]
    shift: tuple[float, float, float]
    source: tuple[int, int, int]

    @classmethod
    def of(cls, scale: Any, shift: Any, swapped: bool) -> "PixelMap":
        """From the graph's 3 scale and shift values (any shape) and whether it reverses BGR to RGB first."""
        flat_scale, flat_shift = np.asarray(scale, np.float64).ravel(), np.asarray(shift, np.float64).ravel()
        if flat_scale.size != 3 or flat_shift.size != 3:
            raise ValueError(f"expected 3 scale and 3 shift values, got {flat_scale.size} and {flat_shift.size}")
        return cls(tuple(map(float, flat_scale)), tuple(map(float, flat_shift)),  # type: ignore[arg-type]
                   (2, 1, 0) if swapped else (0, 1, 2))

    @classmethod
    def from_normalization(cls, normalization: Normalization) -> "PixelMap":
        """The map a pipeline graph exported with `normalization` has (`graph.prepost.preprocess_nodes`)."""
        scale, shift = normalization.scale_shift()
        return cls.of(scale, shift, normalization.order is ChannelOrder.RGB)


class CpuKernels:
    """The pre-processing (uint8 N x H x W x 3 BGR -> normalized N x 3 x h x w) and the exact post-processing
    (N x C x h/f x w/f logits -> uint8 N x H x W labels) of one artifact, on `threads` threads.

    `model_size` is (w, h); `pixels` what the artifact's graph does to a pixel. Calls from several threads
    may overlap; each splits its rows over the shared pool. The kernels are compiled here (seconds the
    first time on a machine, then read from numba's cache).
    """

    def __init__(self, model_size: tuple[int, int], pixels: PixelMap, threads: int) -> None:
        self.model_size = model_size
        self.pixels = pixels
        self.threads = max(1, threads)
        self._scale, self._shift = np.array(pixels.scale, np.float32), np.array(pixels.shift, np.float32)
        self._source = np.array(pixels.source, np.int64)
        self._resize = resize_kernel()
        self._columns, self._rows_argmax = upsample_kernels()
        self._compile()
        self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="cpu-kernels")
        self._lock = threading.Lock()
        self._closed = False

    def _compile(self) -> None:
        """Run each kernel once on tiny arrays, so compiling (or reading numba's cache) happens at load time."""
        began = time.perf_counter()
        start, weights = axis_taps(TAPS, 1, 1)
        self._columns(np.zeros((1, TAPS), np.float32), start, weights, np.empty((1, 1), np.float32), 0, 1)
        self._rows_argmax(np.zeros((1, 1, TAPS, 1), np.float32), start, weights, np.empty((1, 1, 1), np.uint8), 0, 1)
        self._resize(np.zeros((1, 1, 1, 3), np.uint8), resize_taps(1, 1), column_taps(1, 1), self._scale, self._shift,
                     self._source, np.empty((1, 3, 1, 1), np.float32), 0, 1)
        took = time.perf_counter() - began
        if took > 1.0:
            _log.info("compiled the CPU pre/post-processing kernels in %.1f s (numba keeps them for the next start)",
                      took)

    def preprocess(self, frames: np.ndarray) -> np.ndarray:
        """Normalized float32 N x 3 x h x w model input for C-contiguous uint8 N x H x W x 3 BGR `frames`."""
        n, height, width = frames.shape[:3]
        model_w, model_h = self.model_size
        out = np.empty((n, 3, model_h, model_w), np.float32)
        self._split(self._resize, n * model_h, frames, resize_taps(height, model_h), column_taps(width, model_w),
                    self._scale, self._shift, self._source, out)
        return out

    def factor(self, coarse_hw: tuple[int, int]) -> int:
        """The model's final upsample factor for logits of `coarse_hw`; ValueError where it is not one integer."""
        (w, h), (ch, cw) = self.model_size, coarse_hw
        if ch < 1 or cw < 1 or h % ch or w % cw or h // ch != w // cw:
            raise ValueError(f"coarse logits of {ch} x {cw} are not the model's ({h} x {w}) divided by one integer")
        return h // ch

    def postprocess(self, logits: np.ndarray, frame_hw: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
        """uint8 N x H x W labels for coarse `logits` (any float type) at frame size `frame_hw`, into `out` if given."""
        logits = np.ascontiguousarray(logits, dtype=np.float32)
        n, classes, coarse_h, coarse_w = logits.shape
        factor = self.factor((coarse_h, coarse_w))
        height, width = frame_hw
        y_start, y_weights = axis_taps(coarse_h, factor, height)
        x_start, x_weights = axis_taps(coarse_w, factor, width)
        labels = np.empty((n, height, width), np.uint8) if out is None else out
        cols = np.empty((n, classes, coarse_h, width), np.float32)
        flat_logits, flat_cols = logits.reshape(-1, coarse_w), cols.reshape(-1, width)
        self._split(self._columns, flat_logits.shape[0], flat_logits, x_start, x_weights, flat_cols)
        self._split(self._rows_argmax, n * height, cols, y_start, y_weights, labels)
        return labels

    def _split(self, kernel: Callable[..., None], jobs: int, *args: Any) -> None:
        """`kernel(*args, first, end)` over [0, jobs) in one slice per thread; the calling thread runs the first."""
        parts = min(self.threads, jobs)
        edges = [jobs * i // parts for i in range(parts + 1)]
        with self._lock:
            if self._closed:
                raise RuntimeError("the CPU kernels' thread pool is closed")
            futures = [self._pool.submit(kernel, *args, edges[i], edges[i + 1]) for i in range(1, parts)]
        kernel(*args, edges[0], edges[1])
        for future in futures:
            future.result()

    def close(self) -> None:
        """Stop the worker threads (after the calls in flight)."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "CpuKernels":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
