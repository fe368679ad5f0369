"""mIoU of one or more artifacts on the same frames, side by side (FP32 vs FP16 vs INT8 is the main use).

Each frame is read once and given to every Segmenter at its native size (the graph resizes to the
model size and back), and every artifact accumulates its own confusion matrix over the whole split.
The console table and the JSON report state scores in the same unit, percent (the JSON names it in
its keys: `miou_percent`, `iou_percent`, ...).
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..artifacts import RANDOM_WEIGHTS
from ..errors import ConfigError, DataError
from ..sizes import format_size
from .metrics import ConfusionMatrix, SegmentationScores

__all__ = ["EvalResult", "evaluate", "format_table", "report", "write_report", "column_names"]


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Scores of one artifact, what ran it, and how often it agreed with the first artifact pixel by pixel."""

    artifact: str
    backend: str
    precision: str
    device: str
    scores: SegmentationScores
    agreement: float | None  # fraction of all pixels labelled as the first artifact labels them
    seconds: float           # wall time spent in this artifact's inference (informational, not a benchmark)
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    model_size: str = ""     # WxH the frames were resized to
    random_weights: bool = False  # the artifact's facts say its weights were never trained

    def to_json(self) -> dict[str, Any]:
        """The report entry: scores in percent as the console shows them (keys say so), the confusion matrix with
        its axes named."""
        scores = self.scores
        return {"artifact": self.artifact, "backend": self.backend, "precision": self.precision, "device": self.device,
                "versions": self.versions, "model_size": self.model_size, "random_weights": self.random_weights,
                "frames": scores.frames, "pixels": scores.pixels, "miou_percent": _percent(scores.miou),
                "mean_accuracy_percent": _percent(scores.mean_accuracy),
                "pixel_accuracy_percent": _percent(scores.pixel_accuracy),
                "agreement_with_first_percent": _percent(self.agreement),
                "iou_percent": {name: _percent(v) for name, v in zip(scores.names, scores.iou)},
                "inference_seconds": round(self.seconds, 3),
                "confusion_matrix": {"rows": "ground truth", "columns": "prediction", "classes": list(scores.names),
                                     "counts": scores.confusion.tolist()}}


def _percent(fraction: float | None) -> float | None:
    """A fraction as percent for the report (4 decimals); None (or NaN: no pixels) as null."""
    return None if fraction is None or fraction != fraction else round(100.0 * fraction, 4)


def evaluate(segmenters: Sequence[Any], dataset: Any, *, progress: bool = True,
             limit: int | None = None) -> list[EvalResult]:
    """Run every Segmenter on the same frames of `dataset` and score each against the ground truth."""
    if not segmenters:
        raise ConfigError("no artifacts to evaluate; pass at least one Segmenter")
    for seg in segmenters:
        if seg.num_classes != dataset.num_classes:
            raise DataError(f"{seg.path} predicts {seg.num_classes} classes but the {dataset.kind} dataset at "
                            f"{dataset.root} has {dataset.num_classes}; evaluate on a dataset with the model's classes")
    count = len(dataset) if limit is None else min(len(dataset), limit)
    if count == 0:
        raise DataError(f"{dataset.root}: no frames to evaluate in split {dataset.split!r}")
    matrices = [ConfusionMatrix(dataset.num_classes) for _ in segmenters]
    same = np.zeros(len(segmenters), np.int64)
    seconds = np.zeros(len(segmenters))
    total = 0
    frames: Any = range(count)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, desc="eval", unit="frame")
    for i in frames:
        image, label = dataset[i]
        first = None
        for k, seg in enumerate(segmenters):
            start = time.perf_counter()
            pred = seg(image)
            seconds[k] += time.perf_counter() - start
            matrices[k].update(pred, label)
            if first is None:
                first = pred
            same[k] += int(np.count_nonzero(pred == first))
        total += label.size
    results = []
    for k, seg in enumerate(segmenters):
        results.append(EvalResult(
            artifact=str(seg.path), backend=seg.backend.name, precision=seg.precision.value, device=seg.device,
            scores=matrices[k].scores(dataset.names), agreement=float(same[k] / total) if k else None,
            seconds=float(seconds[k]), versions=seg.backend.versions(),
            model_size=format_size(seg.model_size) if getattr(seg, "model_size", None) else "",
            random_weights=bool(getattr(seg, "random_weights", False))))
    return results


def column_names(results: Sequence[EvalResult]) -> list[str]:
    """The table's column names: file names, with @WxH or a number where they would repeat."""
    names = [Path(r.artifact).name for r in results]
    if len(set(names)) < len(names):  # one checkpoint at several model sizes, or same-named files
        names = [f"{n}@{r.model_size}" for n, r in zip(names, results)]
    if len(set(names)) < len(names):
        names = [f"{i + 1}:{n}" for i, n in enumerate(names)]
    return names


def format_table(results: Sequence[EvalResult]) -> str:
    """Per-class IoU (%) with one column per artifact, then mIoU, mAcc (mean class accuracy), pixel accuracy and
    agreement rows, all in percent; a note under it names columns of random weights."""
    if not results:
        return ""
    columns = column_names(results)
    names = results[0].scores.names
    first = max([len("pixel accuracy"), *(len(n) for n in names)])
    width = max(8, *(len(c) for c in columns))

    def row(title: str, values: Sequence[float | None]) -> str:
        cells = ["n/a".rjust(width) if v is None or v != v else f"{100 * v:.2f}".rjust(width) for v in values]
        return f"{title.ljust(first)}  " + "  ".join(cells)

    lines = ["IoU %".ljust(first) + "  " + "  ".join(c.rjust(width) for c in columns)]
    lines += [row(name, [r.scores.iou[c] for r in results]) for c, name in enumerate(names)]
    lines.append("-" * len(lines[0]))
    lines.append(row("mIoU", [r.scores.miou for r in results]))
    lines.append(row("mAcc", [r.scores.mean_accuracy for r in results]))
    lines.append(row("pixel accuracy", [r.scores.pixel_accuracy for r in results]))
    if len(results) > 1:
        lines.append(row("same as first", [r.agreement if r.agreement is not None else 1.0 for r in results]))
    random = [c for c, r in zip(columns, results) if r.random_weights]
    if random:
        lines += ["", f"{', '.join(random)}: {RANDOM_WEIGHTS}"]
    return "\n".join(lines)


def report(results: Sequence[EvalResult], dataset: Any) -> dict[str, Any]:
    """The JSON report: dataset, machine, and each artifact's scores (percent) and confusion matrix."""
    import sys

    return {
        "dataset": {"root": str(dataset.root), "kind": dataset.kind, "split": dataset.split,
                    "frames": results[0].scores.frames if results else 0, "skipped": dataset.skipped,
                    "classes": list(dataset.names)},
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                    "numpy": np.__version__},
        "results": [r.to_json() for r in results],
    }


def write_report(path: str | os.PathLike, results: Sequence[EvalResult], dataset: Any) -> Path:
    """Write the JSON report atomically."""
    from ..atomic import write_atomic

    return write_atomic(path, (json.dumps(report(results, dataset), indent=2) + "\n").encode())
