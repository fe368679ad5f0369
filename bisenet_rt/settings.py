"""Where bisenet-rt keeps what it builds and what it caches, with the environment overrides honoured everywhere.

Built artifacts go to the engines folder (`engines/` under the working directory, or `$BISENET_RT_ENGINES`);
caches that only save time (OpenVINO's compiled models, INT8 calibration ranges, TensorRT's timing
cache) go to the user's cache folder (`$BISENET_RT_CACHE`, else `$XDG_CACHE_HOME/bisenet-rt`, else
`~/.cache/bisenet-rt`). Frames above a size limit (`$BISENET_RT_MAX_FRAME`, default 8192x8192) are refused. All of these are read
when asked for, not at import, so a changed environment counts.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENGINES_ENV", "CACHE_ENV", "MAX_FRAME_ENV", "DEFAULT_MAX_FRAME", "engines_dir", "cache_dir",
           "unwritable_reason"]

#: Environment variable naming the engines folder.
ENGINES_ENV = "BISENET_RT_ENGINES"
#: Environment variable naming the cache folder.
CACHE_ENV = "BISENET_RT_CACHE"
#: Environment variable with the largest frame (WxH) the Segmenter accepts.
MAX_FRAME_ENV = "BISENET_RT_MAX_FRAME"
#: The default limit: 8K video (7680x4320) and 45-megapixel stills fit; a 20000x20000 mistake does not.
DEFAULT_MAX_FRAME = (8192, 8192)


def engines_dir() -> Path:
    """Where `bisenet-rt build` writes artifacts and where a command without `--artifact` looks for one."""
    return Path(os.environ.get(ENGINES_ENV) or "engines")


def cache_dir(kind: str | None = None) -> Path:
    """The cache folder, or its subfolder for one `kind` of cache ("openvino", "calibration", "tensorrt")."""
    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "bisenet-rt"
    return base / kind if kind else base


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """None when `folder` can be created and written (probed with a temporary file), else why not, in words.

    Caches only save time: callers that get a reason go on without the cache and say so in a warning.
    """
    from .atomic import create_temp

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        create_temp(folder / "probe").unlink()
    except OSError as exc:
        return f"{exc.strerror or exc}"
    return None
