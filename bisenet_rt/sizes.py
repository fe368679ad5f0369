"""Parsing and checking of 'WIDTHxHEIGHT' sizes, and the bounds on sizes and counts checked before memory is spent."""
from __future__ import annotations

import os
from typing import Any

from .errors import ConfigError
from .settings import DEFAULT_MAX_FRAME, MAX_FRAME_ENV

__all__ = ["parse_size", "check_model_size", "check_frame_size", "format_size", "check_count", "check_batch",
           "check_depth", "max_frame_size", "MAX_BATCH", "MAX_DEPTH"]

_STRIDE = 32
#: The largest batch any artifact is built for or timed with: a batch's frames, labels and activations are all
#: allocated at once (on TensorRT for the profile's maximum, whatever the batch that arrives).
MAX_BATCH = 64
#: The most submissions in flight: each holds its own frames, labels and buffers (on TensorRT its own execution
#: context); once the runtime is busy, more only add latency and memory.
MAX_DEPTH = 16


def parse_size(text: str | tuple[int, int]) -> tuple[int, int]:
    """'1024x512' -> (1024, 512) as (width, height); raise ValueError with the expected form."""
    if isinstance(text, tuple):
        w, h = text
    else:
        parts = str(text).lower().replace("*", "x").split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ConfigError(f"bad size {text!r}: expected WIDTHxHEIGHT, e.g. 1024x512")
        w, h = (int(p) for p in parts)
    if w <= 0 or h <= 0:
        raise ConfigError(f"bad size {text!r}: width and height must be positive")
    return int(w), int(h)


def check_frame_size(size: str | tuple[int, int], what: str = "frame size", reason: str = "") -> tuple[int, int]:
    """Parse a size and require it within the frame-size limit (`max_frame_size`); `reason` says why
    this size is bounded by it."""

    w, h = parse_size(size)
    limit_w, limit_h = max_frame_size()
    if w > limit_w or h > limit_h:
        raise ConfigError(f"{what} {w}x{h} is larger than the frame-size limit {limit_w}x{limit_h}"
                          f"{f' ({reason})' if reason else ''}; choose a smaller size, or raise the limit with "
                          f"{MAX_FRAME_ENV}=WxH")
    return w, h


def check_model_size(size: str | tuple[int, int]) -> tuple[int, int]:
    """Parse a model input size and require multiples of 32 (the semantic branch's total stride), within the
    frame-size limit (frames are resized to it: a larger model only costs memory, in export and inference)."""
    w, h = check_frame_size(size, "model size", "frames are resized to the model size, so a larger one adds "
                            "nothing but memory: exporting and every inference grow with its area")
    if w % _STRIDE or h % _STRIDE:
        raise ConfigError(f"model size {w}x{h} is not a multiple of {_STRIDE} in both dimensions "
                         f"(BiSeNetV2 down-samples by {_STRIDE}); try {round(w / _STRIDE) * _STRIDE or _STRIDE}x"
                         f"{round(h / _STRIDE) * _STRIDE or _STRIDE}")
    return w, h


def format_size(size: tuple[int, int]) -> str:
    """(1024, 512) -> '1024x512'."""
    return f"{size[0]}x{size[1]}"


def check_count(value: Any, what: str, limit: int, reason: str, error: type[Exception] = ConfigError) -> int:
    """A whole number in 1..`limit` (booleans, fractions and text refused), else `error` saying `reason`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{what} must be a whole number in 1..{limit}, got {value!r}")
    if not 1 <= value <= limit:
        raise error(f"{what} must be in 1..{limit}, got {value}: {reason}")
    return value


def check_batch(value: Any, what: str = "batch", error: type[Exception] = ConfigError) -> int:
    """A batch size in 1..MAX_BATCH."""
    return check_count(value, what, MAX_BATCH, "a batch's frames, labels and activations are allocated at once", error)


def check_depth(value: Any, what: str = "depth", error: type[Exception] = ConfigError) -> int:
    """Submissions in flight, 1..MAX_DEPTH."""
    return check_count(value, what, MAX_DEPTH, "each submission in flight holds its own frames, labels and buffers, "
                       "and once the runtime is busy more only add latency and memory", error)


def max_frame_size() -> tuple[int, int]:
    """The largest frame (width, height) the Segmenter takes (`$BISENET_RT_MAX_FRAME`, read when asked for);
    bigger ones are refused before any allocation."""
    text = os.environ.get(MAX_FRAME_ENV)
    if not text:
        return DEFAULT_MAX_FRAME
    try:
        return parse_size(text)
    except ValueError as exc:
        raise ConfigError(f"{MAX_FRAME_ENV}={text!r}: {exc}") from None
