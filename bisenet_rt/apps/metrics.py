"""Segmentation accuracy by the standard definition: one confusion matrix over the whole split.

IoU_c = TP / (TP + FP + FN) from that matrix; mIoU averages the classes that occur in the ground
truth or the predictions (a class absent from both has no IoU and is left out of the mean, as in the
Cityscapes scripts); pixels labelled ignore (255) are not counted at all.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from ..classes import IGNORE_INDEX

__all__ = ["confusion_matrix", "ConfusionMatrix", "SegmentationScores", "scores_from_confusion"]


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, *,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """num_classes x num_classes int64 counts: rows are ground truth, columns predictions."""
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {target.shape} differ in shape")
    valid = target != ignore_index
    t = target[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"ground-truth values outside 0..{num_classes - 1} (and {ignore_index} = ignore): "
                         f"{sorted(set(np.unique(t[(t < 0) | (t >= num_classes)]).tolist()))[:8]}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predicted class ids outside 0..{num_classes - 1}: the model has more classes than "
                         "the dataset; evaluate it on a dataset with the same classes")
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


@dataclasses.dataclass(frozen=True)
class SegmentationScores:
    """Per-class IoU (None where a class is absent from ground truth and prediction), mIoU, pixel accuracy."""

    names: tuple[str, ...]
    iou: tuple[float | None, ...]
    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    pixels: int
    frames: int
    confusion: np.ndarray = dataclasses.field(repr=False, compare=False)

    def to_json(self, *, confusion: bool = False) -> dict[str, Any]:
        """Plain-JSON form (fractions in 0..1); the confusion matrix only when asked for (it is large)."""
        out: dict[str, Any] = {
            "miou": _json_float(self.miou), "pixel_accuracy": _json_float(self.pixel_accuracy),
            "mean_accuracy": _json_float(self.mean_accuracy), "frames": self.frames, "pixels": self.pixels,
            "iou": {name: _json_float(v) for name, v in zip(self.names, self.iou)},
        }
        if confusion:
            out["confusion"] = self.confusion.tolist()
        return out


def _json_float(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else round(float(v), 6)


def scores_from_confusion(confusion: np.ndarray, names: Sequence[str] | None = None, *,
                          frames: int = 0) -> SegmentationScores:
    """IoU per class, mIoU, pixel accuracy and mean class accuracy of a confusion matrix (rows = truth)."""
    cm = np.asarray(confusion, np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix is square, got shape {cm.shape}")
    k = cm.shape[0]
    names = tuple(names) if names is not None else tuple(f"class_{i}" for i in range(k))
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}-class confusion matrix")
    tp = np.diag(cm).astype(np.float64)
    gt = cm.sum(1).astype(np.float64)
    pred = cm.sum(0).astype(np.float64)
    union = gt + pred - tp
    iou = tuple(float(tp[c] / union[c]) if union[c] > 0 else None for c in range(k))
    present = [v for v in iou if v is not None]
    recall = [tp[c] / gt[c] for c in range(k) if gt[c] > 0]
    total = float(cm.sum())
    return SegmentationScores(
        names=names, iou=iou, miou=float(np.mean(present)) if present else float("nan"),
        pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
        mean_accuracy=float(np.mean(recall)) if recall else float("nan"),
        pixels=int(total), frames=frames, confusion=cm)


class ConfusionMatrix:
    """Accumulates one confusion matrix over many frames, then scores it."""

    def __init__(self, num_classes: int, *, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), np.int64)
        self.frames = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one frame (or a batch of the same shape) of predictions and ground truth."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, ignore_index=self.ignore_index)
        self.frames += 1 if np.ndim(target) <= 2 else int(np.shape(target)[0])

    def scores(self, names: Sequence[str] | None = None) -> SegmentationScores:
        return scores_from_confusion(self.matrix, names, frames=self.frames)
