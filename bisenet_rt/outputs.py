"""Outputs never land on inputs: what a command will write is compared with what it reads before any work.

Paths are compared resolved (links followed, `..` removed, case folded where the platform does) and,
for files that exist, by identity (device and inode), so another spelling of an input, a symbolic
link to it or a hard link to it is caught as well.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .errors import InputError

__all__ = ["same_file", "check_outputs"]

#: (path, what it is, in words: "the label PNG of a.png", "an input image")
Described = tuple[Path, str]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino


def _spelling(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (or would, once written)."""
    a, b = Path(a), Path(b)
    if _spelling(a) == _spelling(b):
        return True
    ids = _identity(a), _identity(b)
    return ids[0] is not None and ids[0] == ids[1]


def check_outputs(outputs: Iterable[Described], inputs: Iterable[Described]) -> None:
    """Refuse, with one line, an output that would overwrite an input; call before any work starts."""
    spellings: dict[str, Described] = {}
    identities: dict[tuple[int, int], Described] = {}
    for path, what in inputs:
        path = Path(path)
        spellings.setdefault(_spelling(path), (path, what))
        identity = _identity(path)
        if identity is not None:
            identities.setdefault(identity, (path, what))
    for path, what in outputs:
        path = Path(path)
        identity = _identity(path)
        hit = spellings.get(_spelling(path)) or (identities.get(identity) if identity is not None else None)
        if hit is not None:
            named = "" if _spelling(hit[0]) == _spelling(path) else f" (as {path})"
            raise InputError(f"{what} would overwrite {hit[1]}, {hit[0]}{named}; nothing was written: choose another "
                             "output path")
