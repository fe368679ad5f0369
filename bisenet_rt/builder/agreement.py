"""How closely a built INT8 artifact follows FP32: the check behind `auto` choosing INT8.

The artifact runs on its own backend, at the frames' own size, and is held to the PyTorch FP32 reference
pipeline (`model.reference.reference_labels`) of the same weights; the score is the share of pixels
labelled alike, the measure `bisenet-rt compare` and `bisenet-rt eval` report as agreement.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..backends.spec import BuildConfig

__all__ = ["int8_agreement", "CHECK_FRAMES"]

_log = logging.getLogger(__name__)

#: Calibration frames the check runs (spread over the folder, as calibration picks them).
CHECK_FRAMES = 4


def int8_agreement(artifact: Path, config: BuildConfig, frames: int = CHECK_FRAMES) -> tuple[float, int]:
    """The share of pixels `artifact` labels as the FP32 reference of `config.weights` does, over up to `frames`
    of `config.calib`'s frames, and how many frames that was."""
    import torch

    from ..backends import open_backend
    from ..graph.calibration import calibration_files
    from ..images import read_image
    from ..model import model_and_sha
    from ..model.reference import reference_labels

    model, _ = model_and_sha(config.weights)  # in eval mode, float
    backend = open_backend(artifact)
    same = total = 0
    paths = calibration_files(config.calib, frames)
    try:
        for path in paths:
            frame = read_image(path)[None]
            labels = backend.infer(np.ascontiguousarray(frame))
            expected = reference_labels(model, torch.from_numpy(frame), config.model_size).numpy()
            same += int((labels == expected).sum())
            total += expected.size
    finally:
        backend.close()
    _log.debug(f"int8 check: {same} of {total} pixels as FP32 on {len(paths)} frames")
    return same / total, len(paths)
