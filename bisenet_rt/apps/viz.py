"""Colour label maps and blend them over frames, for people to look at."""
from __future__ import annotations

import numpy as np

from ..classes import CITYSCAPES_PALETTE, IGNORE_INDEX
from ..classes import palette as class_palette
from ..errors import ConfigError

__all__ = ["colorize", "overlay"]


def colorize(labels: np.ndarray, palette: np.ndarray | None = None, *, bgr: bool = True) -> np.ndarray:
    """H x W class ids -> H x W x 3 uint8 colours (BGR for OpenCV by default); ids past the palette
    (the ignore label 255 among them) are black. Without a palette, Cityscapes colours are used."""
    import cv2

    if palette is None:
        valid = labels[labels != IGNORE_INDEX]
        palette = np.asarray(class_palette(max(len(CITYSCAPES_PALETTE), int(valid.max(initial=0)) + 1)), np.uint8)
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)[:256]
    if bgr:
        lut = lut[:, ::-1]
    ids = np.ascontiguousarray(labels, dtype=np.uint8)
    if ids.ndim != 2 or ids.size == 0:
        return np.ascontiguousarray(lut[ids])
    # cv2.LUT maps each channel through its own table: an order of magnitude faster than numpy fancy indexing.
    return cv2.LUT(cv2.merge([ids, ids, ids]), np.ascontiguousarray(lut).reshape(1, 256, 3))


def overlay(frame: np.ndarray, labels: np.ndarray, palette: np.ndarray | None = None, *, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised labels over a BGR frame; `alpha` is the weight of the colours."""
    if frame.shape[:2] != labels.shape:
        raise ValueError(f"frame {frame.shape[:2]} and labels {labels.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
    import cv2

    # cv2.addWeighted rounds to nearest in one pass over uint8 (video overlays run beside inference).
    return cv2.addWeighted(np.ascontiguousarray(frame, dtype=np.uint8), 1.0 - alpha, colorize(labels, palette, bgr=True),
                           alpha, 0.0)
