"""Argument helpers shared by several subcommands."""
from __future__ import annotations

import argparse

from ..sizes import parse_size

__all__ = ["size_arg", "model_size_arg", "precision_arg"]


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
