"""CamVid in the SegNet layout: ROOT/<split>/*.png with labels of the same name in ROOT/<split>annot/."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..classes import CAMVID_CLASSES, CAMVID_VOID, IGNORE_INDEX
from ..errors import DataError
from ..images import IMAGE_SUFFIXES
from .base import LabelEncoding, SegmentationDataset

__all__ = ["LAYOUT", "looks_like", "open_camvid"]

LAYOUT = "a CamVid tree: ROOT/<split>/*.png with labels (ids 0..10, 11 = void) in ROOT/<split>annot/*.png"


def _encoding() -> LabelEncoding:
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    lut[: len(CAMVID_CLASSES)] = np.arange(len(CAMVID_CLASSES))
    valid = np.zeros(256, bool)
    valid[: len(CAMVID_CLASSES)] = True
    valid[[CAMVID_VOID, IGNORE_INDEX]] = True
    return LabelEncoding(lut, valid, f"CamVid ids 0..{len(CAMVID_CLASSES) - 1}, {CAMVID_VOID} (void) or {IGNORE_INDEX}")


def looks_like(root: Path, split: str) -> bool:
    return (root / split).is_dir() and (root / f"{split}annot").is_dir()


def open_camvid(root: str | os.PathLike, split: str = "val", *, skip_bad: bool = False,
                progress: bool = False) -> SegmentationDataset:
    """The frames of one split; void (11) becomes ignore."""
    root = Path(root)
    images = sorted(p for p in (root / split).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{root / split}: no frames found; expected {LAYOUT}")
    labels = [root / f"{split}annot" / (p.stem + ".png") for p in images]
    return SegmentationDataset(list(zip(images, labels)), names=CAMVID_CLASSES, encoding=_encoding(), kind="camvid",
                               root=root, split=split, skip_bad=skip_bad, progress=progress)
