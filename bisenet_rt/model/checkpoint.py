"""Load the public BiSeNetV2 checkpoints (and our own) into the reference model."""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

from ..errors import CheckpointError
from .bisenetv2 import AUX_HEAD_NAMES, BiSeNetV2

__all__ = ["load_checkpoint", "load_state_dict", "file_sha256", "save_checkpoint", "model_and_sha"]

_log = logging.getLogger(__name__)

_CLASSIFIER_BIAS = "head.conv_out.1.bias"
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _unwrap(obj: Any, path: Path) -> dict[str, Any]:
    """Find the state dict inside a training checkpoint and drop a DDP `module.` prefix."""
    import torch

    for key in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict (expected a mapping of parameter names to tensors, "
                              f"optionally under 'state_dict'); got {type(obj).__name__}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint file safely (`weights_only=True`) and return its BiSeNetV2 state dict."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); "
                              "the file is corrupt or not a PyTorch checkpoint") from None
    return _unwrap(obj, path)


def _mismatch_report(model: BiSeNetV2, state: Mapping[str, Any]) -> list[str]:
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state and not k.startswith(AUX_HEAD_NAMES)]
    unexpected = [k for k in state if k not in expected and not k.startswith(AUX_HEAD_NAMES)]
    shaped = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            problems.append(f"{label} keys: {shown}")
    return problems


def load_checkpoint(path: str | os.PathLike, *, aux_heads: bool = False, num_classes: int | None = None) -> BiSeNetV2:
    """Build a BiSeNetV2 from a checkpoint file, inferring the class count, in eval mode.

    Accepts the public checkpoints with or without aux keys, a DDP `module.` prefix and a
    `{"state_dict": ...}` wrapper. `aux_heads=True` keeps the booster heads (needed to resume
    training); their weights load when present and stay freshly initialised otherwise.
    Raises CheckpointError naming missing / unexpected / mis-shaped keys for a foreign file.
    """
    path = Path(path)
    state = load_state_dict(path)
    if _CLASSIFIER_BIAS not in state:
        raise CheckpointError(f"{path}: not a BiSeNetV2 checkpoint: key {_CLASSIFIER_BIAS!r} is missing "
                              f"(first keys: {', '.join(list(state)[:5])})")
    inferred = int(state[_CLASSIFIER_BIAS].shape[0])
    if num_classes is not None and num_classes != inferred:
        raise CheckpointError(f"{path}: checkpoint has {inferred} classes, but {num_classes} were asked for")
    model = BiSeNetV2(inferred, aux_heads=aux_heads)
    problems = _mismatch_report(model, state)
    if problems:
        raise CheckpointError(f"{path}: not a BiSeNetV2 checkpoint of the public layout; " + "; ".join(problems))
    if not aux_heads:
        state = {k: v for k, v in state.items() if not k.startswith(AUX_HEAD_NAMES)}
    model.load_state_dict(state, strict=not aux_heads)
    return model.float().eval()


def save_checkpoint(model: BiSeNetV2, path: str | os.PathLike, *, half: bool = False) -> Path:
    """Save the model's state dict in the public layout (optionally FP16 to halve the file)."""
    import torch

    state = model.state_dict()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    from ..atomic import replacing

    path = Path(path)
    with replacing(path) as tmp:
        torch.save(state, tmp)
    return path


def model_and_sha(weights: str | os.PathLike | None, *, num_classes: int = 19) -> tuple[BiSeNetV2, str]:
    """The inference model from `weights` and the file's sha256, or a random one ("random-init").

    Random weights get a logged warning: their predictions mean nothing (speed does not depend on them).
    """
    if weights is None:
        _log.warning("no --weights given; using random weights, so predictions are meaningless "
                     "(timings are still valid)")
        return BiSeNetV2(num_classes, aux_heads=False).eval(), "random-init"
    return load_checkpoint(weights), file_sha256(weights)
