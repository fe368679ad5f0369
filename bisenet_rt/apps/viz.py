"""Colour label maps and blend them over frames, for people to look at: overlays with a legend of the classes
present, and label PNGs with their palette embedded (mode P), which viewers show in colour and label readers
(PIL, Cityscapes' and MMSegmentation's tools) read as the class ids."""
from __future__ import annotations

import struct
import zlib
from typing import Sequence

import numpy as np

from ..classes import CITYSCAPES_PALETTE, IGNORE_INDEX
from ..classes import palette as class_palette
from ..errors import ConfigError

__all__ = ["colorize", "overlay", "draw_legend", "palette_png"]

#: How much of the frame under the legend shows through its dark background.
_LEGEND_SHADE = 0.35
#: Legend rows at most; the rest are counted in a last row.
_LEGEND_ROWS = 19


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


def draw_legend(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, names: Sequence[str]) -> tuple[int, int, int, int]:
    """Draw, in place in the top-right corner of a BGR image, the classes present in `labels` (largest area first):
    a swatch of each class's colour (`palette`, RGB), its name and its share of the pixels. Returns the legend's
    box (x0, y0, x1, y1); the image outside it is untouched."""
    import cv2

    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    counts = np.bincount(np.asarray(labels, np.uint8).ravel(), minlength=256)[: len(names)]
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    if not present:
        return (0, 0, 0, 0)
    height, width = image.shape[:2]
    scale = float(np.clip(height / 1400.0, 0.35, 1.0))
    thickness = max(1, round(2 * scale))
    font = cv2.FONT_HERSHEY_SIMPLEX
    shown = present if len(present) <= _LEGEND_ROWS else present[: _LEGEND_ROWS - 1]
    rows = [f"{names[c]} {_share(counts[c] / labels.size)}" for c in shown]
    if len(shown) < len(present):
        rows.append(f"+{len(present) - len(shown)} more")
    (_, text_h), base = cv2.getTextSize("Ag", font, scale, thickness)  # the same height for every row
    text_w = max(cv2.getTextSize(r, font, scale, thickness)[0][0] for r in rows)
    pad, row_h = max(2, text_h // 2), text_h + base + max(2, text_h // 2)
    swatch = text_h + base
    x1, y0 = width - pad, pad
    x0 = max(0, x1 - (pad + swatch + pad + text_w + pad))
    y1 = min(height, y0 + pad + row_h * len(rows))
    image[y0:y1, x0:x1] = (image[y0:y1, x0:x1] * _LEGEND_SHADE).astype(np.uint8)
    for i, text in enumerate(rows):
        top = y0 + pad + i * row_h
        if i < len(shown):
            colour = tuple(int(v) for v in np.asarray(palette[shown[i]], np.uint8)[::-1])  # RGB -> BGR
            cv2.rectangle(image, (x0 + pad, top), (x0 + pad + swatch, top + swatch), colour, cv2.FILLED)
            cv2.rectangle(image, (x0 + pad, top), (x0 + pad + swatch, top + swatch), (255, 255, 255), 1)
        cv2.putText(image, text, (x0 + 2 * pad + swatch, top + text_h), font, scale, (255, 255, 255), thickness,
                    cv2.LINE_AA)
    return (x0, y0, x1, y1)


def _share(fraction: float) -> str:
    """A share of the pixels for the legend: whole percent, '<1%' for a class that is there but small."""
    return f"{100.0 * fraction:.0f}%" if fraction >= 0.005 else "<1%"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def palette_png(labels: np.ndarray, palette: np.ndarray) -> bytes:
    """An H x W label map as a palette PNG (colour type 3, 8 bits): each pixel holds its class id, and the
    palette (`palette`, RGB, one row per class; ids past it, the ignore label 255 among them, black) says how
    it looks. OpenCV decodes such a file to colours; PIL (mode P) and the tools built on it read the ids."""
    ids = np.ascontiguousarray(labels, dtype=np.uint8)
    if ids.ndim != 2 or ids.size == 0:
        raise ValueError(f"a label map is a non-empty H x W array, got shape {ids.shape}")
    colours = np.zeros((256, 3), np.uint8)
    given = np.asarray(palette, np.uint8).reshape(-1, 3)[:256]
    colours[: len(given)] = given
    height, width = ids.shape
    rows = np.zeros((height, width + 1), np.uint8)  # each scanline starts with its filter type, 0 (none)
    rows[:, 1:] = ids
    return (b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0))
            + _png_chunk(b"PLTE", colours.tobytes())
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + _png_chunk(b"IEND", b""))
