"""Training augmentation of the booster recipe: random scale, random crop with padding, horizontal flip.

Works on numpy (BGR uint8 H x W x 3 image, uint8 H x W label) with OpenCV resizes. Every random
choice comes from a generator seeded by (run seed, draw number), so a sample is the same whatever
the number of DataLoader workers, and a resumed run sees exactly the samples it would have seen.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..classes import IGNORE_INDEX, MEAN_RGB
from ..errors import ConfigError
from ..sizes import check_model_size

__all__ = ["AugmentConfig", "TrainAugment", "sample_rng", "DEFAULT_SCALES", "IMAGE_PAD_BGR"]

#: The paper's scale set, {0.75 ... 2.0}.
DEFAULT_SCALES: tuple[float, ...] = (0.75, 1.0, 1.25, 1.5, 1.75, 2.0)

#: Image padding: the dataset mean colour (BGR uint8), which normalises to zero.
IMAGE_PAD_BGR: tuple[int, int, int] = tuple(int(round(c * 255)) for c in reversed(MEAN_RGB))  # type: ignore[assignment]


def sample_rng(seed: int, draw: int) -> np.random.Generator:
    """The generator of one training sample: independent streams for every (seed, draw) pair."""
    return np.random.default_rng([int(seed), int(draw)])


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Crop size (w, h; multiples of 32, as the model needs), scale set and flip probability."""

    crop: tuple[int, int] = (512, 256)
    scales: tuple[float, ...] = DEFAULT_SCALES
    flip_prob: float = 0.5

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "crop", check_model_size(self.crop))
        except ValueError as exc:
            raise ConfigError(f"bad crop size: {exc}") from None
        scales = tuple(float(s) for s in self.scales)
        if not scales or any(not s > 0 for s in scales):
            raise ConfigError(f"scales must be a non-empty list of positive factors, got {self.scales}")
        object.__setattr__(self, "scales", scales)
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ConfigError(f"flip_prob must be in [0, 1], got {self.flip_prob}")


class TrainAugment:
    """(image, label, rng) -> (image, label) at the crop size: scale, then crop/pad, then flip.

    Where the scaled frame is smaller than the crop, the crop window reaches past its edges and
    the outside is filled with the mean colour (image) and IGNORE_INDEX (label).
    """

    def __init__(self, config: AugmentConfig = AugmentConfig()) -> None:
        self.config = config

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 H x W x 3 image, got {image.dtype} {image.shape}")
        if label.shape != image.shape[:2]:
            raise ValueError(f"label {label.shape} and image {image.shape[:2]} differ in size")
        scale = float(rng.choice(self.config.scales))
        flip = bool(rng.random() < self.config.flip_prob)
        h, w = label.shape
        sw, sh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        if (sw, sh) != (w, h):
            image = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, (sw, sh), interpolation=cv2.INTER_NEAREST)
        cw, ch = self.config.crop
        x0 = int(rng.integers(min(0, sw - cw), max(0, sw - cw) + 1))
        y0 = int(rng.integers(min(0, sh - ch), max(0, sh - ch) + 1))
        image = _window(image, x0, y0, cw, ch, IMAGE_PAD_BGR)
        label = _window(label, x0, y0, cw, ch, IGNORE_INDEX)
        if flip:
            image, label = image[:, ::-1], label[:, ::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(label)


def _window(array: np.ndarray, x0: int, y0: int, w: int, h: int, fill: int | tuple[int, ...]) -> np.ndarray:
    """The w x h window at (x0, y0) of `array`, filled with `fill` where it lies outside."""
    if x0 >= 0 and y0 >= 0 and x0 + w <= array.shape[1] and y0 + h <= array.shape[0]:
        return array[y0:y0 + h, x0:x0 + w]
    out = np.empty((h, w) + array.shape[2:], array.dtype)
    out[...] = np.asarray(fill, array.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + w, array.shape[1]), min(y0 + h, array.shape[0])
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = array[sy0:sy1, sx0:sx1]
    return out
