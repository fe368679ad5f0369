"""Parsing and checking of 'WIDTHxHEIGHT' sizes."""
from __future__ import annotations

from .errors import ConfigError

__all__ = ["parse_size", "check_model_size", "format_size"]

_STRIDE = 32


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


def check_model_size(size: str | tuple[int, int]) -> tuple[int, int]:
    """Parse a model input size and require multiples of 32 (the semantic branch's total stride)."""
    w, h = parse_size(size)
    if w % _STRIDE or h % _STRIDE:
        raise ConfigError(f"model size {w}x{h} is not a multiple of {_STRIDE} in both dimensions "
                         f"(BiSeNetV2 down-samples by {_STRIDE}); try {round(w / _STRIDE) * _STRIDE or _STRIDE}x"
                         f"{round(h / _STRIDE) * _STRIDE or _STRIDE}")
    return w, h


def format_size(size: tuple[int, int]) -> str:
    """(1024, 512) -> '1024x512'."""
    return f"{size[0]}x{size[1]}"
