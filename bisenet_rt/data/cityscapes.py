"""Cityscapes layout: leftImg8bit/<split>/<city>/*_leftImg8bit.png with gtFine/<split>/<city>/*_gtFine_labelIds.png.

Files are named `<city>_<sequence>_<frame>_<kind>.png` (six-digit numbers), the id the official
cityscapesScripts and the benchmark server match predictions to ground truth by.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..classes import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_ID_TO_TRAIN_ID, IGNORE_INDEX
from ..errors import DataError
from .base import LabelEncoding, SegmentationDataset, train_id_encoding

__all__ = ["LAYOUT", "looks_like", "open_cityscapes", "label_id_encoding", "frame_id", "parse_frame_id",
           "train_id_to_label_id", "IMAGE_SUFFIX", "LABEL_IDS_SUFFIX", "TRAIN_IDS_SUFFIX", "INSTANCE_IDS_SUFFIX"]

LAYOUT = ("a Cityscapes tree: ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png with labels in "
          "ROOT/gtFine/<split>/<city>/*_gtFine_labelIds.png")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
INSTANCE_IDS_SUFFIX = "_gtFine_instanceIds.png"  # uint16: label id * 1000 + instance, or the label id alone (crowd)
_MAX_LABEL_ID = 33  # ids 0..33 exist; 255 (-1 as uint8, license plate) is allowed too
_UNLABELED = 0
_FRAME_ID = re.compile(r"([^_/]+)_(\d{6})_(\d{6})(?=_|\.|$)")


def frame_id(city: str, sequence: int, frame: int) -> str:
    """`<city>_<sequence>_<frame>` as Cityscapes names its files ("berlin_000000_000019")."""
    if not city or "_" in city:
        raise ValueError(f"a Cityscapes city name has no underscore and is not empty; got {city!r}")
    return f"{city}_{sequence:06d}_{frame:06d}"


def parse_frame_id(name: str) -> tuple[str, int, int] | None:
    """(city, sequence, frame) of a Cityscapes file name, or None when it is not named that way."""
    m = _FRAME_ID.match(name)
    return (m[1], int(m[2]), int(m[3])) if m else None


def train_id_to_label_id() -> np.ndarray:
    """256-entry table: the 19 train ids -> their Cityscapes label ids; anything else -> 0 (unlabeled)."""
    lut = np.full(256, _UNLABELED, np.uint8)
    for label_id, train_id in CITYSCAPES_LABEL_ID_TO_TRAIN_ID.items():
        lut[train_id] = label_id
    return lut


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
    images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise DataError(f"{image_dir}: no frames found; expected {LAYOUT}")
    stems = [(p.parent.name, p.name[: -len(IMAGE_SUFFIX)]) for p in images]
    label_dir = root / "gtFine" / split
    label_ids = [label_dir / city / f"{stem}{LABEL_IDS_SUFFIX}" for city, stem in stems]
    train_ids = [label_dir / city / f"{stem}{TRAIN_IDS_SUFFIX}" for city, stem in stems]
    if not any(p.is_file() for p in label_ids) and all(p.is_file() for p in train_ids):
        labels, encoding = train_ids, train_id_encoding(len(CITYSCAPES_CLASSES))
    else:
        labels, encoding = label_ids, label_id_encoding()
    return SegmentationDataset(list(zip(images, labels)), names=CITYSCAPES_CLASSES, encoding=encoding,
                               kind="cityscapes", root=root, split=split, skip_bad=skip_bad, progress=progress)
