"""Checkpoint families: what travels with a set of public weights, as timm's pretrained configs do.

A family names the BGA variant its network was built with, the normalization and colour order its
weights expect, its class names, and the protocol its accuracy was published under (model size and
mIoU). The loader tells the family from a checkpoint's key layout; export writes it into the ONNX
metadata and the in-graph preprocessing; the PyTorch oracle and backend normalize with it.
Torch-free, so artifact readers can use it.
"""
from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any

import numpy as np

from .classes import CITYSCAPES_CLASSES, MEAN_RGB, MMSEG_MEAN_RGB, MMSEG_STD_RGB, STD_RGB, class_names
from .errors import ArtifactError

__all__ = ["ChannelOrder", "Normalization", "BGAUpsample", "BGAVariant", "CheckpointFamily", "COINCHEUNG", "MMSEG",
           "FAMILIES", "DEFAULT_FAMILY", "DEMO_CHECKPOINT", "OWN_WEIGHTS", "family_named", "family_for_bga", "family_of"]


class ChannelOrder(str, enum.Enum):
    """Colour order the network's input channels are in (frames arrive BGR, as OpenCV reads them)."""

    RGB = "rgb"
    BGR = "bgr"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Per-channel `(pixel - mean) / std`, with mean and std stated on `value_range` (1.0: pixels / 255; 255.0: raw)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    value_range: float = 1.0
    order: ChannelOrder = ChannelOrder.RGB

    def __post_init__(self) -> None:
        if self.value_range not in (1.0, 255.0):
            raise ValueError(f"value_range must be 1.0 (pixels / 255) or 255.0 (raw pixels), got {self.value_range}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need three values each, std positive; got {self.mean}, {self.std}")

    def scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """float64 (scale, shift) per model channel such that `raw_pixel * scale + shift` is the model input."""
        std = np.asarray(self.std, np.float64)
        return self.value_range / (255.0 * std), -np.asarray(self.mean, np.float64) / std

    def to_dict(self) -> dict[str, Any]:
        """As artifact facts state it (`ArtifactInfo.to_dict`)."""
        return {"mean_rgb": list(self.mean), "std_rgb": list(self.std), "value_range": self.value_range,
                "channel_order": self.order.value}

    @classmethod
    def from_dict(cls, facts: dict[str, Any]) -> "Normalization":
        """Read what `to_dict` wrote; ValueError or TypeError when it is malformed."""
        mean, std = (tuple(float(v) for v in facts[key]) for key in ("mean_rgb", "std_rgb"))
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need three values each, got {mean}, {std}")
        return cls(mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]),
                   value_range=float(facts["value_range"]), order=ChannelOrder(facts["channel_order"]))


class BGAUpsample(str, enum.Enum):
    """How the Bilateral Guided Aggregation upsamples x4 (semantic gate and the gated semantic path)."""

    NEAREST = "nearest"
    BILINEAR = "bilinear"  # align_corners=False

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class BGAVariant:
    """The two ways the public checkpoints build the BGA layer; everything else is the same network.

    `pointwise_bias`: the 1x1 convs ending the detail and semantic depthwise-separable paths
    (`bga.left1.2`, `bga.right2.2`) carry a bias.
    """

    upsample: BGAUpsample = BGAUpsample.NEAREST
    pointwise_bias: bool = False


@dataclasses.dataclass(frozen=True)
class CheckpointFamily:
    """One published family of BiSeNetV2 weights and the facts that travel with it."""

    name: str
    title: str
    source: str
    bga: BGAVariant
    normalization: Normalization
    classes: tuple[str, ...]
    scored_size: tuple[int, int]  # (w, h) the published mIoU was measured at
    published_miou: float  # Cityscapes val, percent

    def class_names(self, num_classes: int) -> tuple[str, ...]:
        """The family's class names when the count matches, generic names otherwise (a fine-tuned head)."""
        return self.classes if num_classes == len(self.classes) else class_names(num_classes)

    @property
    def published(self) -> str:
        """The published score in words: '{title} weights: the published ones score X mIoU on Cityscapes val at WxH'."""
        w, h = self.scored_size
        return (f"{self.title} weights: the published ones score {self.published_miou:.2f} mIoU on Cityscapes val "
                f"at model size {w}x{h}")

    def protocol_note(self, model_size: tuple[int, int], how: str | None = None) -> str:
        """One line on how a run at `model_size` relates to the published accuracy of this family's weights;
        `how` says how to run at the published size instead (default: `--model-size WxH`, for checkpoints)."""
        w, h = self.scored_size
        if tuple(model_size) == self.scored_size:
            return f"{self.published}, the size this run uses"
        how = how or f"--model-size {w}x{h} reproduces the published protocol"
        return f"{self.published}; this run resizes to {model_size[0]}x{model_size[1]}, so expect another mIoU ({how})"


COINCHEUNG = CheckpointFamily(
    name="coincheung", title="CoinCheung/BiSeNet", source="https://github.com/CoinCheung/BiSeNet",
    bga=BGAVariant(), normalization=Normalization(MEAN_RGB, STD_RGB, 1.0),
    classes=CITYSCAPES_CLASSES, scored_size=(2048, 1024), published_miou=74.95)

MMSEG = CheckpointFamily(
    name="mmseg", title="MMSegmentation", source="https://github.com/open-mmlab/mmsegmentation",
    bga=BGAVariant(BGAUpsample.BILINEAR, pointwise_bias=True),
    normalization=Normalization(MMSEG_MEAN_RGB, MMSEG_STD_RGB, 255.0),
    classes=CITYSCAPES_CLASSES, scored_size=(2048, 1024), published_miou=73.21)

#: The demo checkpoint shipped in the package: trained here on synthetic street scenes (bisenet_rt/assets/README.md).
DEMO_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "demo_bisenetv2_synth.pth"
#: Weights this project trained, by the sha256 of their checkpoint file (what artifact facts record as
#: `source_sha256`), and what they are: no published accuracy goes with them, whatever their layout's family.
OWN_WEIGHTS: dict[str, str] = {
    "e1ac919e9e3a92b9a62699274282731d19aa5115d2355bfd5ce4ba655bc5f7be":
        "the demo model, trained here on synthetic street scenes",
}

#: Every known family by name.
FAMILIES: dict[str, CheckpointFamily] = {f.name: f for f in (COINCHEUNG, MMSEG)}
#: What weights without a stated family (random init, models trained here) are taken to be.
DEFAULT_FAMILY = COINCHEUNG


def family_named(name: str) -> CheckpointFamily:
    """The family called `name` (as written in artifact metadata)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ArtifactError(f"unknown checkpoint family {name!r} in the artifact's metadata (known: "
                              f"{', '.join(FAMILIES)}); re-export it with this version of bisenet-rt") from None


def family_for_bga(bga: BGAVariant) -> CheckpointFamily:
    """The family whose network has this BGA variant (the layout of our own checkpoints tells only that)."""
    for family in FAMILIES.values():
        if family.bga == bga:
            return family
    return DEFAULT_FAMILY


def family_of(model: Any) -> CheckpointFamily:
    """The family of a model's weights (set by the loader), or the default family for a model without one."""
    return getattr(model, "family", None) or DEFAULT_FAMILY
