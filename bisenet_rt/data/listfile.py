"""List files for custom data: one `image,label` pair per line, paths relative to the list file's folder.

Labels are single-channel PNGs already holding train ids (0..num_classes-1, 255 = ignore). Blank lines
and lines starting with '#' are skipped; two whitespace-separated paths are accepted too (as in the
SegNet CamVid lists).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..atomic import write_atomic
from ..classes import class_names
from ..errors import DataError
from .base import SegmentationDataset, train_id_encoding

__all__ = ["LAYOUT", "find_list", "read_list", "write_list", "open_list"]

LAYOUT = "a list file: one 'image,label' pair per line (paths relative to the list file), labels in train ids"
_LIST_SUFFIXES = (".txt", ".lst", ".csv")


def find_list(root: Path, split: str) -> Path | None:
    """ROOT/<split>.txt (or .lst, .csv) if there is one."""
    for suffix in _LIST_SUFFIXES:
        if (root / f"{split}{suffix}").is_file():
            return root / f"{split}{suffix}"
    return None


def read_list(path: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Parse a list file into absolute (image, label) paths."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the list file ({exc})") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")] if "," in line else line.split()
        if len(fields) != 2 or not all(fields):
            raise DataError(f"{path}:{number}: expected 'image,label', got {line!r}")
        pairs.append((path.parent / fields[0], path.parent / fields[1]))
    return pairs


def write_list(path: str | os.PathLike, pairs: list[tuple[str | os.PathLike, str | os.PathLike]]) -> Path:
    """Write (image, label) pairs as a list file, paths relative to its folder where possible."""
    path = Path(path)
    base = path.parent.resolve()

    def rel(p: str | os.PathLike) -> str:
        p = Path(p).resolve()
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            return str(p)

    write_atomic(path, "".join(f"{rel(i)},{rel(l)}\n" for i, l in pairs).encode("utf-8"))
    return path


def open_list(path: str | os.PathLike, *, num_classes: int = 19, split: str = "", skip_bad: bool = False,
              progress: bool = False) -> SegmentationDataset:
    """The frames a list file names; labels are train ids of `num_classes` classes."""
    path = Path(path)
    pairs = read_list(path)
    if not pairs:
        raise DataError(f"{path}: the list names no frames; expected {LAYOUT}")
    return SegmentationDataset(pairs, names=class_names(num_classes), encoding=train_id_encoding(num_classes),
                               kind="list", root=path, split=split or path.stem, skip_bad=skip_bad, progress=progress)
