"""Checking frames where they enter: one place, so every backend rejects bad input the same way."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import InputError, InputTypeError
from ..settings import MAX_FRAME_ENV
from ..sizes import max_frame_size

__all__ = ["as_batch", "array_batch", "check_size", "check_out"]

_EXPECTED = "expected uint8 BGR frames shaped H x W x 3 (one frame) or N x H x W x 3 (a batch), as OpenCV delivers"


def _check_array(frames: Any, what: str) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        if hasattr(frames, "__cuda_array_interface__"):
            raise InputTypeError(f"{what} is a GPU array; pass device buffers to Segmenter.infer_device(), "
                            "or a host numpy array here")
        raise InputTypeError(f"{what} must be a numpy.ndarray, got {type(frames).__name__}; {_EXPECTED}")
    if frames.dtype != np.uint8:
        raise InputTypeError(f"{what} has dtype {frames.dtype}, {_EXPECTED}; convert 0..255 data with "
                        ".astype(np.uint8) (do not pass normalised floats)")
    return frames


def as_batch(frames: Any) -> tuple[np.ndarray | list[np.ndarray], bool]:
    """Normalise input to a C-contiguous uint8 N x H x W x 3 batch, or a list of such single-frame
    batches when a list holds frames of different sizes; also return whether one frame came in."""
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise InputError(f"empty list of frames; {_EXPECTED}")
        items = [_check_single(_check_array(f, f"frame {i}"), f"frame {i}") for i, f in enumerate(frames)]
        if len({f.shape for f in items}) == 1:
            return np.ascontiguousarray(np.stack(items)), False
        return [np.ascontiguousarray(f[None]) for f in items], False
    return array_batch(frames)


def array_batch(frames: Any) -> tuple[np.ndarray, bool]:
    """`as_batch` for one frame (H x W x 3) or a batch array (N x H x W x 3); lists are not taken here."""
    array = _check_array(frames, "frame")
    if array.ndim == 3:
        return np.ascontiguousarray(_check_single(array, "frame")[None]), True
    if array.ndim == 4:
        if array.shape[0] == 0:
            raise InputError(f"empty batch (shape {array.shape}); {_EXPECTED}")
        _check_single(array[0], "batch")
        return np.ascontiguousarray(array), False
    raise InputError(f"frame has shape {array.shape} ({array.ndim} dimensions); {_EXPECTED}")


def _check_single(frame: np.ndarray, what: str) -> np.ndarray:
    if frame.ndim != 3:
        raise InputError(f"{what} has shape {frame.shape}; {_EXPECTED}")
    h, w, c = frame.shape
    if c != 3:
        hint = " (grayscale? convert with cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))" if c == 1 else (
            " (BGRA? drop alpha with cv2.cvtColor(f, cv2.COLOR_BGRA2BGR))" if c == 4 else "")
        raise InputError(f"{what} has {c} channels{hint}; {_EXPECTED}")
    if h == 0 or w == 0:
        raise InputError(f"{what} is empty (shape {frame.shape}); {_EXPECTED}")
    limit_w, limit_h = max_frame_size()
    if w > limit_w or h > limit_h:
        raise InputError(f"{what} is {w}x{h}, larger than the frame-size limit {limit_w}x{limit_h}; downscale it, or "
                         f"raise the limit with {MAX_FRAME_ENV}=WxH")
    return frame


def check_size(batch_shape: Sequence[int], min_size: tuple[int, int] | None, max_size: tuple[int, int] | None,
               max_batch: int | None, artifact: str) -> None:
    """Reject a batch the artifact's optimisation profile cannot take, saying how to rebuild."""
    n, h, w = int(batch_shape[0]), int(batch_shape[1]), int(batch_shape[2])
    if max_batch is not None and n > max_batch:
        raise InputError(f"batch of {n} frames exceeds the maximum batch {max_batch} of {artifact}; split the batch "
                         f"or rebuild with 'bisenet-rt build --max-batch {n}'")
    lo_w, lo_h = min_size or (1, 1)
    hi_w, hi_h = max_size or (1 << 30, 1 << 30)
    if not (lo_w <= w <= hi_w and lo_h <= h <= hi_h):
        raise InputError(f"frame size {w}x{h} is outside the range {lo_w}x{lo_h} .. {hi_w}x{hi_h} that {artifact} was "
                         f"built for; resize the frame or rebuild with 'bisenet-rt build --min-size WxH --max-size WxH'")


def check_out(out: Any, shape: Sequence[int]) -> np.ndarray:
    """Accept a caller's label array for `out=`: numpy, uint8, `shape` (N x H x W), C-contiguous, writable."""
    wanted = f"a writable C-contiguous uint8 numpy array shaped {' x '.join(map(str, shape))}"
    if not isinstance(out, np.ndarray):
        raise InputTypeError(f"out must be {wanted}, got {type(out).__name__}")
    if out.dtype != np.uint8:
        raise InputTypeError(f"out has dtype {out.dtype}; expected {wanted}")
    if tuple(out.shape) != tuple(shape):
        raise InputError(f"out has shape {' x '.join(map(str, out.shape))}; expected {wanted}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise InputError(f"out is {'not C-contiguous' if not out.flags.c_contiguous else 'read-only'}; expected {wanted}")
    return out
