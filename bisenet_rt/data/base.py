"""`SegmentationDataset`: (image, label) file pairs read as BGR frames and train-id label maps.

Each reader (Cityscapes, CamVid, list file) only finds the file pairs and says how raw label values
map to train ids; reading and checking the files happens here, the same way for every layout.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..classes import IGNORE_INDEX
from ..errors import ConfigError, DataError
from ..images import ImageError, image_size, read_image

__all__ = ["SegmentationDataset", "LabelEncoding", "train_id_encoding"]

class LabelEncoding:
    """How a label file's values become train ids: a 256-entry lookup table and the values allowed at all."""

    def __init__(self, lut: np.ndarray, valid: np.ndarray, description: str) -> None:
        self.lut = np.asarray(lut, np.uint8)
        self.valid = np.asarray(valid, bool)
        self.description = description


def train_id_encoding(num_classes: int) -> LabelEncoding:
    """Labels already in train ids 0..num_classes-1, with 255 = ignore."""
    if not 1 <= num_classes < IGNORE_INDEX:
        raise ConfigError(f"num_classes must be in 1..{IGNORE_INDEX - 1}, got {num_classes}")
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    lut[:num_classes] = np.arange(num_classes)
    valid = np.zeros(256, bool)
    valid[:num_classes] = True
    valid[IGNORE_INDEX] = True
    return LabelEncoding(lut, valid, f"train ids 0..{num_classes - 1} or {IGNORE_INDEX} (ignore)")


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from an image header without decoding it; None for unreadable files."""
    try:
        _, w, h = image_size(path)
    except ImageError:
        return None
    return w, h


class SegmentationDataset:
    """Frames and train-id labels of one split: `ds[i] -> (BGR uint8 H x W x 3, uint8 H x W)`, 255 = ignore.

    Missing label files and PNG size mismatches are found when the dataset opens; undecodable files
    and label values outside the class range when a frame is read. Either raises `DataError` naming
    the file, unless `skip_bad`, which checks every pair up front and drops (and counts) the bad ones.
    """

    def __init__(self, files: Sequence[tuple[Path, Path | None]], *, names: Sequence[str], encoding: LabelEncoding,
                 kind: str, root: str | os.PathLike, split: str, skip_bad: bool = False, progress: bool = False) -> None:
        self.names: tuple[str, ...] = tuple(names)
        self.encoding = encoding
        self.kind = kind
        self.root = Path(root)
        self.split = split
        self.problems: list[str] = []
        good: list[tuple[Path, Path]] = []
        pairs: Sequence[tuple[Path, Path | None]] | Iterator[tuple[Path, Path | None]] = files
        if progress and skip_bad:
            from tqdm import tqdm

            pairs = tqdm(files, desc="checking frames", unit="frame", leave=False)
        for image, label in pairs:
            problem = self._check_pair(image, label)  # also refuses a missing label (None)
            if problem is None and label is not None and skip_bad:
                problem = self._check_contents(image, label)
            if problem is None and label is not None:
                good.append((image, label))
            elif skip_bad:
                self.problems.append(problem or f"{image}: no label file found for it")
            else:
                raise DataError(f"{problem} (pass --skip-bad / skip_bad=True to skip bad frames)")
        self.files: list[tuple[Path, Path]] = good

    # -- checks ------------------------------------------------------------------------------------
    @staticmethod
    def _check_pair(image: Path, label: Path | None) -> str | None:
        """Cheap checks done for every pair on opening: files exist, PNG sizes agree."""
        if not image.is_file():
            return f"{image}: image file is missing"
        if label is None:
            return f"{image}: no label file found for it"
        if not label.is_file():
            return f"{image}: its label file {label} is missing"
        a, b = _header_size(image), _header_size(label)
        if a is not None and b is not None and a != b:
            return f"{label}: label is {b[0]}x{b[1]} but its image {image.name} is {a[0]}x{a[1]}"
        return None

    def _check_contents(self, image: Path, label: Path) -> str | None:
        try:
            self._read(image, label)
        except DataError as exc:
            return str(exc)
        return None

    def _read(self, image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        try:
            image = read_image(image_path)
            raw = read_image(label_path, cv2.IMREAD_UNCHANGED)
        except ImageError as exc:
            raise DataError(str(exc)) from None  # "PATH: not a readable image (why)"
        if raw.ndim == 3:
            if raw.shape[2] >= 3 and np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 0], raw[..., 2]):
                raw = raw[..., 0]
            else:
                raise DataError(f"{label_path}: label is a colour image ({raw.shape[2]} channels); expected one channel "
                                f"of {self.encoding.description} (for Cityscapes, the *_gtFine_labelIds.png files)")
        if raw.shape != image.shape[:2]:
            raise DataError(f"{label_path}: label is {raw.shape[1]}x{raw.shape[0]} but its image {image_path.name} is "
                            f"{image.shape[1]}x{image.shape[0]}")
        if raw.dtype != np.uint8:
            if raw.max(initial=0) > 255:
                raise DataError(f"{label_path}: label values up to {int(raw.max())}; expected {self.encoding.description}")
            raw = raw.astype(np.uint8)
        counts = np.bincount(raw.ravel(), minlength=256)
        bad = np.flatnonzero((counts > 0) & ~self.encoding.valid)
        if bad.size:
            shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
            raise DataError(f"{label_path}: label values {shown} are outside the class range; expected "
                            f"{self.encoding.description}")
        return image, self.encoding.lut[raw]

    # -- access ------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def skipped(self) -> int:
        """How many frames `skip_bad` dropped (their reasons are in `problems`)."""
        return len(self.problems)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = self.files[index]
        try:
            return self._read(image, label)
        except DataError as exc:
            raise DataError(f"{exc} (pass --skip-bad / skip_bad=True to check every frame first and skip bad "
                            "ones)") from None

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(len(self)):
            yield self[i]

    def subset(self, limit: int) -> "SegmentationDataset":
        """The first `limit` frames (for quick runs); the rest of the dataset's facts are unchanged."""
        if limit < 1:
            raise ConfigError(f"limit must be at least 1, got {limit}")
        clone = object.__new__(SegmentationDataset)
        clone.__dict__.update(self.__dict__)
        clone.files = self.files[:limit]
        return clone

    def __repr__(self) -> str:
        return (f"SegmentationDataset({self.kind}, {str(self.root)!r}, split={self.split!r}, frames={len(self)}, "
                f"classes={self.num_classes}, skipped={self.skipped})")
