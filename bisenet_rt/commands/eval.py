"""Score one or more artifacts on a labelled split: per-class IoU, mIoU and pixel accuracy, side by side."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from ._common import check_writable, newest_artifact_or_fail

HELP = "mIoU / per-class IoU / pixel accuracy of artifacts on a dataset split (several side by side)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path,
                   help="dataset root (Cityscapes or CamVid tree, or a folder with <split>.txt) or a list file")
    p.add_argument("--split", default="val", help="split to score (default val)")
    p.add_argument("--kind", default="auto", choices=["auto", "cityscapes", "camvid", "list"],
                   help="dataset layout (default: told from the files)")
    p.add_argument("--engine", type=Path, action="append", default=None, metavar="PATH",
                   help="artifact to score (.engine, .onnx, .xml, .pth); repeat to compare several on the same "
                        "frames (default: the newest artifact under engines/)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write a JSON report here")
    p.add_argument("--skip-bad", action="store_true",
                   help="check every frame first; skip (and count) missing, mismatched or out-of-range labels")
    p.add_argument("--limit", type=int, metavar="N", help="score only the first N frames")
    p.add_argument("--num-classes", type=int, default=19, help="classes of a list-file dataset (default 19)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data import open_dataset
    from ..evaluate import evaluate, format_table, write_report
    from ..segmenter import Segmenter

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    if args.json:
        check_writable(args.json, "--json")
    engines = args.engine or [newest_artifact_or_fail("--engine")]
    dataset = open_dataset(args.data, args.split, kind=args.kind, skip_bad=args.skip_bad,
                           num_classes=args.num_classes, progress=not args.no_progress)
    if dataset.skipped:
        print(f"skipped {dataset.skipped} bad frame(s); first: {dataset.problems[0]}", file=sys.stderr)
    segmenters = [Segmenter(path) for path in engines]
    try:
        results = evaluate(segmenters, dataset, progress=not args.no_progress, limit=args.limit)
    finally:
        for seg in segmenters:
            seg.close()
    frames = results[0].scores.frames
    print(f"{dataset.kind} {dataset.split}: {frames} frames from {dataset.root}"
          + (f" ({dataset.skipped} skipped)" if dataset.skipped else ""))
    print(format_table(results))
    if args.json:
        print(f"wrote {write_report(args.json, results, dataset)}", file=sys.stderr)
    return 0
