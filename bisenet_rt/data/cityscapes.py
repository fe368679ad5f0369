"""Cityscapes layout: leftImg8bit/<split>/<city>/*_leftImg8bit.png with gtFine/<split>/<city>/*_gtFine_labelIds.png."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..classes import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_ID_TO_TRAIN_ID, IGNORE_INDEX
from ..errors import DataError
from .base import LabelEncoding, SegmentationDataset, train_id_encoding

__all__ = ["LAYOUT", "looks_like", "open_cityscapes", "label_id_encoding"]

LAYOUT = ("a Cityscapes tree: ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png with labels in "
          "ROOT/gtFine/<split>/<city>/*_gtFine_labelIds.png")
_IMAGE_SUFFIX = "_leftImg8bit.png"
_MAX_LABEL_ID = 33  # ids 0..33 exist; 255 (-1 as uint8, license plate) is allowed too


def label_id_encoding() -> LabelEncoding:
    """Cityscapes label ids -> the 19 train ids; every other id -> ignore."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for label_id, train_id in CITYSCAPES_LABEL_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    valid = np.zeros(256, bool)
    valid[:_MAX_LABEL_ID + 1] = True
    valid[IGNORE_INDEX] = True
    return LabelEncoding(lut, valid, f"Cityscapes label ids 0..{_MAX_LABEL_ID} or {IGNORE_INDEX}")


def looks_like(root: Path) -> bool:
    return (root / "leftImg8bit").is_dir()


def open_cityscapes(root: str | os.PathLike, split: str = "val", *, skip_bad: bool = False,
                    progress: bool = False) -> SegmentationDataset:
    """The frames of one split; labels from *_gtFine_labelIds.png (or *_gtFine_labelTrainIds.png where
    a tree only has those)."""
    root = Path(root)
    image_dir = root / "leftImg8bit" / split
    images = sorted(image_dir.glob(f"*/*{_IMAGE_SUFFIX}"))
    if not images:
        raise DataError(f"{image_dir}: no frames found; expected {LAYOUT}")
    stems = [(p.parent.name, p.name[: -len(_IMAGE_SUFFIX)]) for p in images]
    label_dir = root / "gtFine" / split
    label_ids = [label_dir / city / f"{stem}_gtFine_labelIds.png" for city, stem in stems]
    train_ids = [label_dir / city / f"{stem}_gtFine_labelTrainIds.png" for city, stem in stems]
    if not any(p.is_file() for p in label_ids) and all(p.is_file() for p in train_ids):
        labels, encoding = train_ids, train_id_encoding(len(CITYSCAPES_CLASSES))
    else:
        labels, encoding = label_ids, label_id_encoding()
    return SegmentationDataset(list(zip(images, labels)), names=CITYSCAPES_CLASSES, encoding=encoding,
                               kind="cityscapes", root=root, split=split, skip_bad=skip_bad, progress=progress)
