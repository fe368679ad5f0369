"""Load the public BiSeNetV2 checkpoints (CoinCheung/BiSeNet, MMSegmentation) and our own into the reference model.

The family is told from the key layout: MMSeg's `backbone.*` / `decode_head.*` keys are renamed to
ours (`mmseg_layout`) and get the MMSeg BGA variant and normalization; our layout with biased BGA
pointwise convs is an MMSeg network saved by us; anything else is the CoinCheung layout.
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

from ..artifacts import RANDOM_INIT, RANDOM_WEIGHTS, artifact_sha256
from ..errors import CheckpointError
from ..families import COINCHEUNG, MMSEG, CheckpointFamily
from .bisenetv2 import AUX_HEAD_NAMES, BiSeNetV2
from .mmseg_layout import from_mmseg, is_mmseg_layout

__all__ = ["load_checkpoint", "load_state_dict", "read_checkpoint", "save_checkpoint", "model_and_sha"]

_log = logging.getLogger(__name__)

_CLASSIFIER_BIAS = "head.conv_out.1.bias"
#: A key only networks with the MMSeg BGA variant have (bias of the BGA's detail pointwise conv).
POINTWISE_BIAS = "bga.left1.2.bias"
_BN_COUNTER = "num_batches_tracked"
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_SAVE_STATE_DICT = "save its weights with torch.save(model.state_dict(), PATH) and load that file"


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


def _check_container(path: Path) -> None:
    """Refuse files that are neither a zip (torch.save) nor a pickle before torch.load tries them."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); the download or copy was cut off, fetch it again")
    if head != _ZIP_MAGIC and head[0] != _PICKLE_PROTO:
        text = head.isascii() and all(32 <= b < 127 or b in b"\t\r\n" for b in head)
        what = ("a text file (an HTML error page or a Git LFS pointer?), not a PyTorch checkpoint" if text
                else "the file is corrupt or not a PyTorch checkpoint")
        raise CheckpointError(f"{path}: {what}; download the .pth checkpoint itself")


def _numpy_data_globals() -> list[Any]:
    """numpy's data-only types (scalars, arrays, dtypes), which training checkpoints carry in their metadata
    (MMSeg's best scores, for one); allowed to the `weights_only` unpickler under both numpy 1 and 2 names."""
    import numpy as np

    core = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")
    allowed: list[Any] = [np.ndarray, np.dtype, *{type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDGSUV"}]
    for package in ("numpy.core", "numpy._core"):
        allowed += [(core.scalar, f"{package}.multiarray.scalar"), (core._reconstruct, f"{package}.multiarray._reconstruct")]
    return allowed


def _read_error(path: Path, exc: BaseException) -> CheckpointError:
    """A one-line CheckpointError for an exception torch.load raised."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if found:
        return CheckpointError(f"{path}: holds a pickled Python object ({found[1]}), not a plain state dict, so it "
                               f"cannot be loaded safely; if it is a whole model saved with torch.save(model), "
                               f"{_SAVE_STATE_DICT}")
    first = lines[0] if lines else "no details"
    return CheckpointError(f"{path}: cannot read checkpoint ({exc.__class__.__name__}: {first}); "
                           "the file is corrupt or not a PyTorch checkpoint, fetch it again")


def _check_finite(state: Mapping[str, Any], path: Path) -> None:
    import torch

    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} tensor(s) hold NaN or Inf values (first: {bad[0]}); the training "
                              "diverged or the file is damaged, use an earlier checkpoint")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], CheckpointFamily]:
    """Read a checkpoint file safely (`weights_only=True`): its state dict in our layout and its family."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    _check_container(path)
    try:
        with torch.serialization.safe_globals(_numpy_data_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError, TypeError) as exc:
        raise _read_error(path, exc) from None
    state = _unwrap(obj, path)
    _check_finite(state, path)
    if is_mmseg_layout(state):
        state, unknown = from_mmseg(state)
        if unknown:
            shown = ", ".join(unknown[:8]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 8 else "")
            raise CheckpointError(f"{path}: an MMSegmentation checkpoint, but not of BiSeNetV2 with an FCN decode "
                                  f"head; keys with no BiSeNetV2 counterpart: {shown}")
        return state, MMSEG
    return state, MMSEG if POINTWISE_BIAS in state else COINCHEUNG


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint file safely (`weights_only=True`) and return its BiSeNetV2 state dict in our layout."""
    return read_checkpoint(path)[0]


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


def _with_bn_counters(model: BiSeNetV2, state: Mapping[str, Any]) -> dict[str, Any]:
    """Add the BatchNorm `num_batches_tracked` counters older savers and converters leave out (inference ignores them)."""
    import torch

    filled = dict(state)
    for key in model.state_dict():
        if key.endswith(_BN_COUNTER) and key not in filled:
            filled[key] = torch.tensor(0, dtype=torch.long)
    return filled


def load_checkpoint(path: str | os.PathLike, *, aux_heads: bool = False, num_classes: int | None = None) -> BiSeNetV2:
    """Build a BiSeNetV2 from a checkpoint file, inferring the class count and the family, in eval mode.

    Accepts the CoinCheung and MMSegmentation checkpoints with or without aux keys, a DDP `module.`
    prefix and a `{"state_dict": ...}` wrapper (MMSeg's `{"meta", "state_dict"}` too). The model's
    BGA variant and `family` (normalization, protocol) follow the checkpoint's family. `aux_heads=True`
    keeps the booster heads (needed to resume training); their weights load when present (our layout)
    and stay freshly initialised otherwise (MMSeg's FCN auxiliary heads are a different design).
    Raises CheckpointError naming missing / unexpected / mis-shaped keys for a foreign file.
    """
    path = Path(path)
    state, family = read_checkpoint(path)
    if _CLASSIFIER_BIAS not in state:
        raise CheckpointError(f"{path}: not a BiSeNetV2 checkpoint: key {_CLASSIFIER_BIAS!r} is missing "
                              f"(first keys: {', '.join(list(state)[:5])})")
    inferred = int(state[_CLASSIFIER_BIAS].shape[0])
    if num_classes is not None and num_classes != inferred:
        raise CheckpointError(f"{path}: checkpoint has {inferred} classes, but {num_classes} were asked for")
    model = BiSeNetV2(inferred, aux_heads=aux_heads, bga=family.bga)
    model.family = family
    state = _with_bn_counters(model, state)
    problems = _mismatch_report(model, state)
    if problems:
        raise CheckpointError(f"{path}: not a BiSeNetV2 checkpoint of the {family.title} layout; " + "; ".join(problems))
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
        _log.warning(f"no --weights given: {RANDOM_WEIGHTS} (timings hold); pass --weights CKPT (the demo model: "
                     "bisenet_rt/assets/demo_bisenetv2_synth.pth)")
        return BiSeNetV2(num_classes, aux_heads=False).eval(), RANDOM_INIT
    return load_checkpoint(weights), artifact_sha256(weights)
