"""Compare artifacts without a dataset, as `polygraphy run --trt --onnxrt` does: the same frames through each, every
artifact held to the first pixel by pixel, and the model's coarse logits compared where they can be had
(checkpoints, ONNX graphs; not TensorRT engines or OpenVINO IR)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from ._common import (add_device_argument, check_report_path, check_writable, model_size_arg, note_kept_size,
                      open_segmenter, output_file_arg, runs_checkpoints, size_arg)

HELP = "compare artifacts on the same frames, no dataset: per-pixel agreement and logit differences"

EXAMPLES = """
bisenet-rt compare engines/bisenetv2_fp32.onnx engines/bisenetv2_int8.onnx
bisenet-rt compare model.pth engines/bisenetv2_fp16.engine --frames camera_frames/ --count 20
bisenet-rt compare model.pth engines/bisenetv2_bf16.xml --min-agreement 99.5 --json cmp.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..apps.compare import DEFAULT_COUNT

    p.add_argument("artifacts", nargs="+", type=Path, metavar="ARTIFACT",
                   help="two or more artifacts (.engine, .onnx, .xml, .pth); the first is the reference")
    p.add_argument("--frames", type=Path, metavar="DIR",
                   help="a folder of images to compare on (default: synthetic street scenes)")
    p.add_argument("--count", type=int, default=DEFAULT_COUNT, metavar="N",
                   help=f"frames to compare on (default {DEFAULT_COUNT})")
    p.add_argument("--size", type=size_arg, default=(2048, 1024), metavar="WxH",
                   help="synthetic frames: their size (default 2048x1024)")
    p.add_argument("--seed", type=int, default=0, help="synthetic frames: their seed (default 0)")
    p.add_argument("--model-size", type=model_size_arg, metavar="WxH",
                   help="checkpoints (.pth): the size frames are resized to (default: the first built artifact's, "
                        "so logits compare at one size; else 1024x512)")
    add_device_argument(p)
    p.add_argument("--min-agreement", type=float, metavar="PERCENT",
                   help="exit 1 when an artifact labels fewer pixels as the first than this (e.g. 99.5)")
    p.add_argument("--json", type=output_file_arg, metavar="PATH", help="also write a JSON report here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..apps.compare import compare, folder_frames, format_table, report, synthetic_frames, write_report
    from ..segmenter import Segmenter
    from ..sizes import check_frame_size, format_size

    if len(args.artifacts) < 2:
        raise ConfigError("give two or more artifacts: the first is the reference the others are held to")
    if args.count < 1:
        raise ConfigError(f"--count must be at least 1, got {args.count}")
    if args.min_agreement is not None and not 0 <= args.min_agreement <= 100:
        raise ConfigError(f"--min-agreement is a percentage, 0..100; got {args.min_agreement}")
    check_frame_size(args.size, "--size", "no frame above it is accepted")
    if args.json:
        check_writable(args.json, "--json")
        check_report_path(args.json, args.artifacts)
    opened: dict[Path, Segmenter] = {}
    try:
        # built artifacts first: their model size is the one checkpoints run at, so logits compare
        for path in args.artifacts:
            if not runs_checkpoints(path):
                opened[path] = open_segmenter(path, device=args.device)
                if args.model_size is not None:
                    note_kept_size(opened[path], args.model_size)
        size = args.model_size or next((seg.model_size for seg in opened.values()), None)
        for path in args.artifacts:
            if path not in opened:
                opened[path] = open_segmenter(path, model_size=size, device=args.device)
        if args.frames is not None:
            frames = folder_frames(args.frames, args.count)
            source = f"{len(frames)} images from {args.frames}"
        else:
            frames = synthetic_frames(args.count, args.size, args.seed)
            source = (f"{len(frames)} synthetic street scenes of {format_size(args.size)} (bisenet_rt.data.synth, "
                      f"seed {args.seed})")
        results = compare([opened[p] for p in args.artifacts], frames, device=args.device,
                          progress=not args.no_progress)
    finally:
        for seg in opened.values():
            seg.close()
    print(format_table(results, source))
    if args.json:
        print(f"wrote {write_report(report(results, source, args._argv), args.json)}", file=sys.stderr)
    if args.min_agreement is not None:
        low = [r for r in results[1:] if r.agreement is not None and 100 * r.agreement < args.min_agreement]
        if low:
            print(f"bisenet-rt compare: {', '.join(Path(r.artifact).name for r in low)} label fewer than "
                  f"{args.min_agreement:g} % of the pixels as {Path(results[0].artifact).name} does", file=sys.stderr)
            return 1
    return 0
