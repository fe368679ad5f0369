"""Bilinear resize weights along one axis, the one definition both CPU kernels build on."""
from __future__ import annotations

import numpy as np

__all__ = ["resize_matrix", "resize_taps"]


def _sources(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output position: its two source positions and the second one's weight."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    return low, np.minimum(low + 1, n_in - 1), src - low


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """n_out x n_in weights (float64) of a half-pixel bilinear resize without antialiasing (ONNX Resize, PyTorch
    `interpolate(align_corners=False)`): a source coordinate below 0 is clamped to 0, past the end to the last."""
    low, high, frac = _sources(n_in, n_out)
    matrix = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, low), 1.0 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix


def resize_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The same resize as two taps per output position: source indices (int64 [n_out] each) and float32 weights."""
    low, high, frac = _sources(n_in, n_out)
    return low, high, (1.0 - frac).astype(np.float32), frac.astype(np.float32)
