"""The PyTorch backend: checkpoints (`.pth`) run by the reference model, on the CPU or a CUDA GPU. It builds nothing."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..spec import BackendSpec

if TYPE_CHECKING:
    from ..base import Backend

__all__ = ["SPEC"]


def _availability() -> str | None:
    try:
        import torch  # noqa: F401
    except ImportError:
        return f"PyTorch is not installed ({SPEC.install})"
    return None


def _runtime() -> "type[Backend]":
    from .run import TorchBackend

    return TorchBackend


SPEC = BackendSpec(name="torch", title="PyTorch", extra="torch", opens=(".pt", ".pth", ".ckpt"),
                   availability=_availability, runtime=_runtime, devices=("cpu", "cuda"))
