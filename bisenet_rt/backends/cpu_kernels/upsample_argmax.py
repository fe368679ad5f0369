"""The exact post-processing as one fused CPU kernel: coarse logits in, labels out, no full-size logits written.

The pipeline graph's post-processing (`graph.prepost`) is two runtime operators whatever its layout: one
writes the 19 full-size logits of every pixel, the next reads them back for the arg-max; on a CPU that pair
runs at the memory's pace. Here the same function, `argmax(resize(upsample_xf(logits)))` with half-pixel
bilinear weights, is two compiled passes: the columns are interpolated at the coarse rows (a small array),
then each output row is interpolated from three of those rows and arg-maxed class by class while it sits
in the L1 cache. Every pixel does the same work whatever the frame shows.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .axis import resize_matrix
from .jit import compiled

__all__ = ["axis_taps", "kernels", "TAPS", "HALF_PIXEL_MODES"]

#: Coarse positions one output position reads along an axis: the x8 upsample and the resize each blend two
#: neighbours, and two neighbouring upsampled positions share one coarse position, so three at most.
TAPS = 3
#: Coordinate modes of the model's own upsample this kernel computes (both are PyTorch's align_corners=False).
HALF_PIXEL_MODES = ("half_pixel", "pytorch_half_pixel")


@functools.lru_cache(maxsize=32)
def axis_taps(coarse: int, factor: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis, the model's x`factor` upsample of `coarse` positions followed by the resize to `length`:
    for each output position the first of the `TAPS` coarse positions it reads (uint64 [length]) and their
    weights (float32 [TAPS, length]); the two resizes are composed in float64 before the one rounding."""
    if coarse < TAPS:
        raise ValueError(f"the coarse logits are {coarse} wide along an axis; the kernel needs at least {TAPS}")
    matrix = resize_matrix(coarse * factor, length) @ resize_matrix(coarse, coarse * factor)
    nonzero = matrix != 0
    first = nonzero.argmax(axis=1)
    last = coarse - 1 - nonzero[:, ::-1].argmax(axis=1)
    if int((last - first).max()) >= TAPS:
        raise ValueError(f"an output position reads more than {TAPS} coarse positions: not an x{factor} upsample "
                         "followed by a resize")
    start = np.minimum(first, coarse - TAPS)
    weights = np.stack([matrix[np.arange(length), start + k] for k in range(TAPS)]).astype(np.float32)
    return start.astype(np.uint64), weights


def _columns(coarse: Any, start: Any, weights: Any, out: Any, first: int, end: int) -> None:
    """out[r, x] = coarse row r interpolated to output column x, for rows first <= r < end."""
    w0, w1, w2 = weights[0], weights[1], weights[2]
    width = out.shape[1]
    for r in range(first, end):
        src = coarse[r]
        dst = out[r]
        for x in range(width):
            s = start[x]
            dst[x] = w0[x] * src[s] + w1[x] * src[s + 1] + w2[x] * src[s + 2]


def _rows_argmax(cols: Any, start: Any, weights: Any, labels: Any, first: int, end: int) -> None:
    """labels[n, y] = the arg-max over classes of `cols` interpolated to output row y, for the (n, y) with
    first <= n * H + y < end; the first class wins a tie, as in every runtime's arg-max."""
    classes = cols.shape[1]
    height, width = labels.shape[1], labels.shape[2]
    best = np.empty(width, np.float32)
    ids = np.empty(width, np.uint8)
    for job in range(first, end):
        n = job // height
        y = job - n * height
        s = start[y]
        a0, a1, a2 = weights[0, y], weights[1, y], weights[2, y]
        t0, t1, t2 = cols[n, 0, s], cols[n, 0, s + 1], cols[n, 0, s + 2]
        for x in range(width):
            best[x] = a0 * t0[x] + a1 * t1[x] + a2 * t2[x]
            ids[x] = 0
        for c in range(1, classes):
            t0, t1, t2 = cols[n, c, s], cols[n, c, s + 1], cols[n, c, s + 2]
            cid = np.uint8(c)
            for x in range(width):
                value = a0 * t0[x] + a1 * t1[x] + a2 * t2[x]
                kept = best[x]
                larger = value > kept
                best[x] = value if larger else kept
                ids[x] = cid if larger else ids[x]
        labels[n, y] = ids


@functools.lru_cache(maxsize=1)
def kernels() -> tuple[Any, Any]:
    """The two passes, `columns` (`_columns`) and `rows_argmax` (`_rows_argmax`), compiled by numba."""
    return compiled(_columns), compiled(_rows_argmax)
