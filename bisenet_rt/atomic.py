"""Files appear complete or not at all: every writer goes through a hidden temporary name in the same
folder, is flushed to disk, then renamed over the target in one step.

Temporary names start with a dot (`.NAME.tmpPID.SUFFIX`, keeping the suffix for tools that pick a
format by it), so nothing that looks for artifacts, images or videos ever picks one up; ones left by
a killed process are removed by the next write to the same target.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

__all__ = ["temp_name", "replacing", "write_atomic", "remove_stale", "commit"]

_MARK = ".tmp"


def temp_name(path: str | os.PathLike) -> Path:
    """The hidden temporary name a write to `path` goes through (this process's; keeps the suffix)."""
    path = Path(path)
    return path.with_name(f".{path.name}{_MARK}{os.getpid()}{path.suffix}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(path: Path) -> None:
    """Remove temporary files of earlier writes to `path` whose process is gone (killed mid-write)."""
    prefix = f".{path.name}{_MARK}"
    if not path.parent.is_dir():
        return
    for leftover in path.parent.glob(f"{prefix}*"):
        digits = leftover.name[len(prefix):].split(".", 1)[0]
        if digits.isdigit() and int(digits) != os.getpid() and not _pid_alive(int(digits)):
            leftover.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a no-op where folders cannot be opened, as on Windows)."""
    with contextlib.suppress(OSError):
        _fsync(folder)


def commit(tmp: Path, path: Path) -> None:
    """Flush a finished temporary file to disk and rename it over `path` in one step."""
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync_folder(path.parent)


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield the temporary path to write; on success it replaces `path` whole, on any error it is removed.

    The folder is created if needed. The old `path`, if any, stays untouched until the final rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = temp_name(path)
    try:
        yield tmp
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes so that a crash at any point leaves either the old file or the new one."""
    path = Path(path)
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return path
