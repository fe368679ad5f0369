"""Files appear complete or not at all, and a write never goes through a file someone else put in its way.

Every writer goes through a temporary file in the target's folder, created exclusively (O_CREAT|O_EXCL|
O_NOFOLLOW: a name planted in advance, a symbolic link included, is never opened), is flushed to disk,
then renamed over the target in one step. The name holds the process id and random letters, so
concurrent writers (processes or threads) never share one. Any error removes the temporary file and
leaves the old target as it was; a full disk is said as such (`DiskFullError`), also for writers
that hide the errno.

Temporary names start with a dot (`.NAME.tmpPID-RANDOM.SUFFIX`, keeping the suffix for tools that
pick a format by it), so nothing that looks for artifacts, images or videos ever picks one up; ones
left by a killed process are removed by the next write to the same target.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from pathlib import Path
from typing import Iterator, Sequence

from .errors import DiskFullError

__all__ = ["Replacement", "replacing", "write_atomic", "create_temp", "remove_stale", "is_disk_full", "no_room", "disk_full"]

_MARK = ".tmp"
#: Flags of every temporary file: created here, never an existing name, never through a link.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_EXCLUSIVE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_ATTEMPTS = 100
#: The process id of a temporary name (`.NAME.tmpPID-RANDOM.SUFFIX`, or `.NAME.tmpPID.SUFFIX` of older releases).
_PID = re.compile(r"(\d+)(?:-[0-9a-f]+)?(?:\.|$)")
#: Errors that mean the file system has no room left for this user.
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
#: Free space below which a failed write is taken for a full disk (writers such as torch.save, OpenVINO and
#: OpenCV's encoders report a full disk without its errno, or not at all).
_NEARLY_FULL = 1 << 20


def _create_exclusive(path: Path) -> None:
    os.close(os.open(path, _EXCLUSIVE, 0o666))  # the umask applies, as for any file the user writes


def create_temp(path: str | os.PathLike, companions: Sequence[str] = ()) -> Path:
    """Create a new, empty temporary file for a write to `path`, exclusively, and return its name.

    `companions` are suffixes of files written beside it under the same stem (an OpenVINO IR's `.bin`);
    they are created exclusively too. Names taken already (by anyone, as anything) are skipped.
    """
    path = Path(path)
    for _ in range(_ATTEMPTS):
        tmp = path.with_name(f".{path.name}{_MARK}{os.getpid()}-{secrets.token_hex(6)}{path.suffix}")
        made: list[Path] = []
        try:
            for part in (tmp, *(tmp.with_suffix(s) for s in companions)):
                _create_exclusive(part)
                made.append(part)
            return tmp
        except FileExistsError:
            for part in made:
                part.unlink(missing_ok=True)
    raise FileExistsError(errno.EEXIST, f"no free temporary name after {_ATTEMPTS} tries", str(path.parent))


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
    for leftover in path.parent.glob(f"{_glob_escape(prefix)}*"):
        found = _PID.match(leftover.name[len(prefix):])
        if found and int(found.group(1)) != os.getpid() and not _pid_alive(int(found.group(1))):
            leftover.unlink(missing_ok=True)  # a link is removed itself, never what it points to


def _glob_escape(text: str) -> str:
    """`text` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def is_disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether a failed write to `folder` failed for want of space: ENOSPC/EDQUOT, or (for writers that
    hide the errno) a file system with almost nothing left."""
    return (isinstance(exc, OSError) and exc.errno in _FULL) or no_room(folder)


def no_room(folder: Path) -> bool:
    """Whether the file system of `folder` has almost no space left for this user (checked cheaply, per write)."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    if stats.f_blocks == 0:  # a file system that reports no sizes (some FUSE and network mounts): not known full
        return False
    free_blocks = stats.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else stats.f_bavail
    return free_blocks * stats.f_frsize < _NEARLY_FULL


def disk_full(path: str | os.PathLike) -> DiskFullError:
    """The one-line error for a write to `path` that found no room."""
    return DiskFullError(f"disk full: {path} (nothing was replaced; free some space and run again)")


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


class Replacement:
    """A write to `path` in progress: write `tmp` (created exclusively), then `commit()` renames it over
    `path`, or `discard()` drops it and leaves `path` as it was."""

    def __init__(self, path: str | os.PathLike, companions: Sequence[str] = ()) -> None:
        self.path = Path(path)
        with self.translated():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale(self.path)
            self.tmp = create_temp(self.path, companions)
        self._parts = [self.tmp, *(self.tmp.with_suffix(s) for s in companions)]

    @contextlib.contextmanager
    def translated(self) -> Iterator[None]:
        """Errors inside become `DiskFullError` (one line naming `path`) when the disk is full."""
        try:
            yield
        except Exception as exc:
            if is_disk_full(exc, self.path.parent):
                raise disk_full(self.path) from exc
            raise

    def commit_part(self, suffix: str) -> None:
        """Rename the companion with `suffix` over its target (before `commit`, which renames the main file last)."""
        with self.translated():
            _commit(self.tmp.with_suffix(suffix), self.path.with_suffix(suffix))

    def commit(self) -> None:
        """Flush the finished temporary file to disk and rename it over `path` in one step."""
        with self.translated():
            _commit(self.tmp, self.path)
        self.discard()

    def discard(self) -> None:
        """Remove what is left of the temporary files (all of them after an error)."""
        for part in self._parts:
            part.unlink(missing_ok=True)


def _commit(tmp: Path, path: Path) -> None:
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync_folder(path.parent)


@contextlib.contextmanager
def replacing(path: str | os.PathLike, companions: Sequence[str] = ()) -> Iterator[Path]:
    """Yield the temporary path to write; on success it replaces `path` whole, on any error it is removed.

    The folder is created if needed. The old `path`, if any, stays untouched until the final rename.
    """
    replacement = Replacement(path, companions)
    try:
        with replacement.translated():
            yield replacement.tmp
        replacement.commit()
    finally:
        replacement.discard()


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes so that a crash at any point leaves either the old file or the new one."""
    path = Path(path)
    with replacing(path) as tmp:
        with os.fdopen(os.open(tmp, os.O_WRONLY | _NOFOLLOW), "wb") as f:  # the file made for this write
            f.write(data)
    return path
