"""Score one or more artifacts on a labelled split: per-class IoU, mIoU and pixel accuracy, side by side."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from typing import TYPE_CHECKING, Sequence

from ..errors import ConfigError
from ..sizes import format_size
from ._common import (add_device_argument, check_report_path, check_writable, model_size_arg, newest_artifact_or_fail, note_kept_size,
                      open_segmenter, output_file_arg, rebuild_at, runs_checkpoints)

if TYPE_CHECKING:
    from ..segmenter import Segmenter

HELP = "mIoU / per-class IoU / pixel accuracy of artifacts on a dataset split (several side by side)"

EXAMPLES = """
bisenet-rt eval --data data/synth --artifact bisenet_rt/assets/demo_bisenetv2_synth.pth
bisenet-rt eval --data data/synth --artifact engines/fp32.onnx --artifact engines/int8.onnx --json cmp.json
bisenet-rt eval --data cityscapes/ --artifact model.pth --model-size 1024x512 --model-size 2048x1024 --device cuda
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path,
                   help="dataset root (Cityscapes or CamVid tree, or a folder with <split>.txt) or a list file")
    p.add_argument("--split", default="val", help="split to score (default val)")
    p.add_argument("--kind", default="auto", choices=["auto", "cityscapes", "camvid", "list"],
                   help="dataset layout (default: told from the files)")
    p.add_argument("--artifact", "--engine", dest="artifact", type=Path, action="append", default=None, metavar="PATH",
                   help="artifact to score (.engine, .onnx, .xml, .pth); repeat to compare several on the same "
                        "frames (default: the newest artifact under engines/)")
    p.add_argument("--model-size", type=model_size_arg, action="append", default=None, metavar="WxH",
                   help="checkpoints (.pth): the size frames are resized to, repeat to score each size side by side "
                        "(e.g. --model-size 1024x512 --model-size 2048x1024: the paper's speed protocol and the "
                        "published accuracy protocol; default 1024x512); built artifacts keep the size they were "
                        "exported at")
    add_device_argument(p)
    p.add_argument("--json", type=output_file_arg, metavar="PATH", help="also write a JSON report here")
    p.add_argument("--skip-bad", action="store_true",
                   help="check every frame first; skip (and count) missing, mismatched or out-of-range labels")
    p.add_argument("--limit", type=int, metavar="N", help="score only the first N frames")
    p.add_argument("--num-classes", type=int, default=19, help="classes of a list-file dataset (default 19)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data import open_dataset
    from ..apps.evaluate import column_names, evaluate, format_table, write_report

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    if args.json:
        check_writable(args.json, "--json")
    artifacts = args.artifact or [newest_artifact_or_fail("--artifact")]
    if args.json:
        check_report_path(args.json, artifacts)
    dataset = open_dataset(args.data, args.split, kind=args.kind, skip_bad=args.skip_bad,
                           num_classes=args.num_classes, progress=not args.no_progress)
    if dataset.skipped:
        print(f"skipped {dataset.skipped} bad frame(s); first: {dataset.problems[0]}", file=sys.stderr)
    segmenters = _open(artifacts, args.model_size, args.device)
    try:
        results = evaluate(segmenters, dataset, progress=not args.no_progress, limit=args.limit)
        notes = protocol_notes(segmenters, column_names(results)) if dataset.kind == "cityscapes" else []
    finally:
        for seg in segmenters:
            seg.close()
    frames = results[0].scores.frames
    print(f"{dataset.kind} {dataset.split}: {frames} frames from {dataset.root}"
          + (f" ({dataset.skipped} skipped)" if dataset.skipped else ""))
    print(format_table(results))
    for note in notes:  # the published numbers are Cityscapes val scores
        print(note, file=sys.stderr)
    if args.json:
        print(f"wrote {write_report(args.json, results, dataset)}", file=sys.stderr)
    return 0


def protocol_notes(segmenters: Sequence["Segmenter"], columns: Sequence[str]) -> list[str]:
    """One line per published family among the columns (`ArtifactInfo.published_family`: not random weights, not
    the demo model): its published score, which columns run at another model size, and how to run them at it."""
    groups: dict[str, list[tuple[str, "Segmenter"]]] = {}
    for seg, column in zip(segmenters, columns):
        family = seg.backend.info.published_family
        if family is not None:
            groups.setdefault(family.name, []).append((column, seg))
    notes = []
    for entries in groups.values():
        family = entries[0][1].backend.info.published_family
        assert family is not None  # grouped above by it
        other = [(column, seg) for column, seg in entries if tuple(seg.model_size) != family.scored_size]
        if not other:
            notes.append(f"{family.published}, the size every column here uses")
            continue
        how = []
        if any(runs_checkpoints(seg.path) for _, seg in other):
            how.append(f"--model-size {format_size(family.scored_size)} scores a checkpoint at it")
        built = [column for column, seg in other if not runs_checkpoints(seg.path)]
        if built:
            how.append(f"{', '.join(built)}: {rebuild_at(family.scored_size)}")
        sizes = "/".join(sorted({format_size(seg.model_size) for _, seg in other}))
        notes.append(f"{family.published}; {', '.join(column for column, _ in other)} resize to {sizes}, so expect "
                     f"another mIoU ({'; '.join(how)})")
    return notes


def _open(artifacts: list[Path], model_sizes: list[tuple[int, int]] | None,
          device: str | None = None) -> list["Segmenter"]:
    """One Segmenter per artifact, and per model size for checkpoints (the PyTorch reference runs any size); a
    built artifact once, at its export size (open_segmenter notes the sizes it cannot apply)."""
    segmenters: list["Segmenter"] = []
    try:
        for path in artifacts:
            if model_sizes and runs_checkpoints(path):
                segmenters += [open_segmenter(path, model_size=size, device=device) for size in model_sizes]
            else:
                seg = open_segmenter(path, device=device)
                segmenters.append(seg)
                for size in dict.fromkeys(model_sizes or []):
                    note_kept_size(seg, size)
    except BaseException:
        for seg in segmenters:
            seg.close()
        raise
    return segmenters
