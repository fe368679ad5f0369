"""The pre-processing as one CPU kernel: uint8 BGR frames in, the model's normalized planar input out.

The pipeline graph converts the whole 6 MB frame to float, resizes it and normalizes the result, three
runtime operators passing full arrays through memory. Here each output row blends its two source rows
straight from the uint8 frame (a row of the frame at a time, in the L1 cache), then each output pixel its
two source columns, and writes the family's normalized value in the model's channel order: the graph's
function (half-pixel bilinear without antialiasing, then `x * scale + shift`), up to float rounding.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .axis import resize_taps
from .jit import compiled

__all__ = ["column_taps", "kernel"]


@functools.lru_cache(maxsize=32)
def column_taps(frame_w: int, model_w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The two source columns of each model column as offsets into a frame row of W x 3 values, and weights."""
    low, high, w_low, w_high = resize_taps(frame_w, model_w)
    return 3 * low, 3 * high, w_low, w_high


def _resize_normalize(frames: Any, rows: Any, cols: Any, scale: Any, shift: Any, source: Any, out: Any,
                      first: int, end: int) -> None:
    """out[n, c, y] for the (n, y) with first <= n * h + y < end: frame channel source[c], resized, normalized.

    rows = (low, high, w_low, w_high) per model row (`axis.resize_taps`), cols the same per model column
    (`column_taps`).
    """
    y_low, y_high, wy_low, wy_high = rows
    x_low, x_high, wx_low, wx_high = cols
    height, width = out.shape[2], out.shape[3]
    row_values = frames.shape[2] * 3
    blended = np.empty(row_values, np.float32)
    for job in range(first, end):
        n = job // height
        y = job - n * height
        top = frames[n, y_low[y]].reshape(row_values)
        bottom = frames[n, y_high[y]].reshape(row_values)
        a, b = wy_low[y], wy_high[y]
        for i in range(row_values):
            blended[i] = a * np.float32(top[i]) + b * np.float32(bottom[i])
        for c in range(3):
            k, add, channel = scale[c], shift[c], source[c]
            dst = out[n, c, y]
            for x in range(width):
                value = wx_low[x] * blended[x_low[x] + channel] + wx_high[x] * blended[x_high[x] + channel]
                dst[x] = value * k + add


@functools.lru_cache(maxsize=1)
def kernel() -> Any:
    """`_resize_normalize` compiled by numba."""
    return compiled(_resize_normalize)
