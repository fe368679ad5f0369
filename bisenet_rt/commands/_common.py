"""Argument helpers shared by several subcommands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..sizes import parse_size

if TYPE_CHECKING:
    from ..segmenter import Segmenter

__all__ = ["size_arg", "model_size_arg", "precision_arg", "open_segmenter"]


def size_arg(text: str) -> tuple[int, int]:
    """argparse type for WIDTHxHEIGHT."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def model_size_arg(text: str) -> tuple[int, int]:
    """argparse type for a model size: WIDTHxHEIGHT, both multiples of 32."""
    from ..sizes import check_model_size

    try:
        return check_model_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def precision_arg(text: str) -> str:
    """argparse type for a precision name."""
    from ..precision import Precision

    try:
        return Precision.parse(text).value
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def open_segmenter(path: Path, backend: str = "auto", model_size: tuple[int, int] | None = None) -> "Segmenter":
    """A Segmenter on `path`; `model_size` applies to checkpoints (a built artifact keeps its export size)."""
    from ..backends import backend_for_path
    from ..segmenter import Segmenter

    name = backend_for_path(path) if backend == "auto" else backend
    if model_size is None:
        return Segmenter(path, backend=backend)
    if name == "torch":
        return Segmenter(path, backend=backend, model_size=model_size)
    print(f"note: {path} keeps the model size it was exported at; --model-size applies to checkpoints (.pth)",
          file=sys.stderr)
    return Segmenter(path, backend=backend)
