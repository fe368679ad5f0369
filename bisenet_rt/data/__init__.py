"""Segmentation datasets: Cityscapes, CamVid and list files, all read as BGR frames and train-id labels."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError, DataError
from .base import LabelEncoding, SegmentationDataset, train_id_encoding

__all__ = ["SegmentationDataset", "LabelEncoding", "open_dataset", "KINDS", "train_id_encoding"]

#: Layouts `open_dataset` reads.
KINDS = ("auto", "cityscapes", "camvid", "list")


def _layouts() -> str:
    from . import camvid, cityscapes, listfile

    return f"{cityscapes.LAYOUT}; or {camvid.LAYOUT}; or {listfile.LAYOUT} (ROOT/<split>.txt or the file itself)"


def _detect(root: Path, split: str) -> str:
    from . import camvid, cityscapes, listfile

    if root.is_file():
        return "list"
    if cityscapes.looks_like(root):
        return "cityscapes"
    if camvid.looks_like(root, split):
        return "camvid"
    if listfile.find_list(root, split) is not None:
        return "list"
    raise DataError(f"{root}: no dataset found for split {split!r}; expected {_layouts()}")


def open_dataset(root: str | os.PathLike, split: str = "val", *, kind: str = "auto", skip_bad: bool = False,
                 num_classes: int = 19, progress: bool = False) -> SegmentationDataset:
    """Open one split of a dataset; `kind` 'auto' tells the layout from the files.

    `num_classes` applies to list files (their labels are train ids); Cityscapes has 19 and CamVid 11.
    With `skip_bad`, every frame is checked up front and bad ones are skipped and counted (`.skipped`).
    """
    root = Path(root)
    if kind not in KINDS:
        raise ConfigError(f"unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not root.exists():
        raise DataError(f"{root}: no such file or folder; expected {_layouts()}")
    if kind == "auto":
        kind = _detect(root, split)
    if kind == "cityscapes":
        from .cityscapes import open_cityscapes

        return open_cityscapes(root, split, skip_bad=skip_bad, progress=progress)
    if kind == "camvid":
        from .camvid import open_camvid

        return open_camvid(root, split, skip_bad=skip_bad, progress=progress)
    from .listfile import LAYOUT, find_list, open_list

    path = root if root.is_file() else find_list(root, split)
    if path is None:
        raise DataError(f"{root}: no {split}.txt list file; expected {LAYOUT}")
    return open_list(path, num_classes=num_classes, split=split, skip_bad=skip_bad, progress=progress)
