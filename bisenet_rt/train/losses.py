"""OHEM cross-entropy, the loss of the BiSeNetV2 booster recipe (main head and every aux head).

Online hard example mining keeps the pixels the model gets wrong: those whose loss exceeds
-log(thresh) (predicted probability of the true class below `thresh`), and never fewer than
`min_kept_fraction` of the valid pixels, so a batch the model already fits still trains.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..classes import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

__all__ = ["ohem_cross_entropy", "OhemCrossEntropy"]


def ohem_cross_entropy(logits: "torch.Tensor", labels: "torch.Tensor", *, thresh: float = 0.7,
                       min_kept_fraction: float = 1.0 / 16.0, ignore_index: int = IGNORE_INDEX) -> "torch.Tensor":
    """Mean cross-entropy over the hard pixels of N x C x H x W `logits` against N x H x W `labels`.

    Hard pixels: loss > -log(thresh); if fewer than k = max(1, int(valid * min_kept_fraction)) of
    the valid (non-ignore) pixels are hard, the k largest losses are kept instead. Computed in
    float32 whatever the logits' dtype. A batch without valid pixels gives a zero loss that still
    back-propagates (zero gradients).
    """
    import torch
    import torch.nn.functional as F

    if not 0.0 < thresh <= 1.0:
        raise ValueError(f"thresh is a probability in (0, 1], got {thresh}")
    if not 0.0 < min_kept_fraction <= 1.0:
        raise ValueError(f"min_kept_fraction must be in (0, 1], got {min_kept_fraction}")
    if logits.dim() != 4 or labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"expected logits N x C x H x W and labels N x H x W, got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    pixel_loss = F.cross_entropy(logits.float(), labels.long(), ignore_index=ignore_index, reduction="none")
    valid = labels != ignore_index
    losses = pixel_loss[valid]
    if losses.numel() == 0:
        return pixel_loss.sum() * 0.0
    n_min = max(1, int(losses.numel() * min_kept_fraction))
    hard = losses[losses > -math.log(thresh)]
    if hard.numel() < n_min:
        hard = torch.topk(losses, n_min, sorted=False).values
    return hard.mean()


class OhemCrossEntropy:
    """`ohem_cross_entropy` with its options bound, callable as loss(logits, labels)."""

    def __init__(self, *, thresh: float = 0.7, min_kept_fraction: float = 1.0 / 16.0,
                 ignore_index: int = IGNORE_INDEX) -> None:
        self.thresh = thresh
        self.min_kept_fraction = min_kept_fraction
        self.ignore_index = ignore_index

    def __call__(self, logits: "torch.Tensor", labels: "torch.Tensor") -> "torch.Tensor":
        return ohem_cross_entropy(logits, labels, thresh=self.thresh, min_kept_fraction=self.min_kept_fraction,
                                  ignore_index=self.ignore_index)

    def __repr__(self) -> str:
        return (f"OhemCrossEntropy(thresh={self.thresh}, min_kept_fraction={self.min_kept_fraction}, "
                f"ignore_index={self.ignore_index})")
