"""Deterministic sample frames for benchmarks, smoke tests and examples (no dataset needed)."""
from __future__ import annotations

import numpy as np

__all__ = ["street_frame"]


def street_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A BGR uint8 frame with smooth regions and sharp edges (sky, road, blocks, sensor noise)."""
    rng = np.random.default_rng(seed)
    y = np.arange(h, dtype=np.float32)[:, None, None]
    horizon = h * (0.35 + 0.1 * rng.random())
    frame = np.where(y < horizon, np.array([200, 150, 90], np.float32), np.array([90, 90, 95], np.float32)) + y / h * 40
    frame = np.broadcast_to(frame, (h, w, 3)).copy()
    for _ in range(6):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        bw, bh = rng.integers(max(1, w // 12), max(2, w // 4)), rng.integers(max(1, h // 10), max(2, h // 3))
        frame[y0:y0 + bh, x0:x0 + bw] = rng.integers(0, 255, 3)
    frame += rng.normal(0, 6, frame.shape).astype(np.float32)
    return np.clip(frame, 0, 255).astype(np.uint8)
