"""Benchmark artifacts with the paper's protocol (resize inside the timed loop), side by side.

By default each artifact is timed for 10 s (at least 10 calls), as trtexec does, so a run ends in seconds on
any machine; --iters 5000 is the paper's protocol. The plan and its expected length are said before timing.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from ..backends import SPECS
from ..errors import ConfigError
from ..sizes import check_depth
from ._common import add_device_argument, check_report_path, check_writable, output_file_arg, size_arg

HELP = "time artifacts end to end (frame in, labels out), the paper's protocol"

EXAMPLES = """
bisenet-rt bench
bisenet-rt bench --artifact engines/bisenetv2_fp32.onnx --artifact engines/bisenetv2_int8.onnx --json cmp.json
bisenet-rt bench --iters 5000 --warmup 50          # the paper's protocol
bisenet-rt bench --duration 30 --mode throughput --depth 3
bisenet-rt bench --artifact model.pth --device cuda:1
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..apps.bench import DEFAULT_DURATION_S, DEFAULT_MIN_ITERS, PAPER_ITERS, WARMUP_S

    p.add_argument("--artifact", "--engine", dest="artifact", action="append", type=Path, metavar="PATH",
                   help="artifact to time (.engine, .onnx, .xml, .pth); repeat to compare side by side "
                        "(default: the newest under engines/, built from the demo checkpoint if there is none)")
    p.add_argument("--backend", default="auto", choices=["auto", *SPECS],
                   help="backend for every --artifact (default auto: by suffix)")
    add_device_argument(p)
    p.add_argument("--iters", type=int, metavar="N",
                   help=f"timed calls per artifact ({PAPER_ITERS} is the paper's protocol; default: by time, "
                        "see --duration)")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help=f"without --iters: seconds of timed calls per artifact (default {DEFAULT_DURATION_S:g})")
    p.add_argument("--min-iters", type=int, default=DEFAULT_MIN_ITERS, metavar="N",
                   help=f"without --iters: at least N timed calls per artifact (default {DEFAULT_MIN_ITERS})")
    p.add_argument("--warmup", type=int, metavar="N",
                   help=f"untimed calls per artifact first (default: {WARMUP_S:g} s of calls)")
    p.add_argument("--batch", type=int, default=1, help="frames per call (default 1)")
    p.add_argument("--size", type=size_arg, default=(2048, 1024), metavar="WxH", help="frame size (default 2048x1024)")
    p.add_argument("--rounds", type=int, default=10,
                   help="interleaved rounds, so artifacts compared side by side share the machine's ups and downs "
                        "(default 10)")
    p.add_argument("--mode", choices=["latency", "throughput"], default="latency",
                   help="latency: one call at a time (the paper's); throughput: --depth frames in flight, frames/s")
    p.add_argument("--depth", type=int, default=2, help="throughput mode: submissions in flight (default 2)")
    p.add_argument("--json", type=output_file_arg, metavar="PATH", help="write the report here")
    p.add_argument("--engines-dir", type=Path, help="where to look for / build artifacts (default engines/, or "
                   "$BISENET_RT_ENGINES)")


def _default_engine(engines_dir: Path | None) -> Path:
    """The newest artifact under the engines folder; none -> the default for this machine, built from the demo
    checkpoint (the speed of any weights, and pictures that mean something)."""
    from ..artifacts import newest_artifact
    from ..builder import BuildConfig, build
    from ..families import DEMO_CHECKPOINT
    from ..settings import engines_dir as default_engines_dir

    engines_dir = engines_dir or default_engines_dir()
    found = newest_artifact(engines_dir)
    if found is not None:
        print(f"bench: using the newest artifact {found}", file=sys.stderr)
        return found
    print(f"bench: no artifact under {engines_dir}/; building the default for this machine from the demo checkpoint "
          f"{DEMO_CHECKPOINT} ('bisenet-rt build --weights CKPT' builds from yours)", file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the table
        return build(BuildConfig(engines_dir=engines_dir, weights=DEMO_CHECKPOINT))


def run(args: argparse.Namespace) -> int:
    from ..apps.bench import DEFAULT_DURATION_S, BenchConfig, format_table, report, run_bench, write_report
    from ..segmenter import Segmenter

    if args.iters is not None and args.duration is not None:
        raise ConfigError("give --iters (a number of calls) or --duration (seconds per artifact), not both")
    config = BenchConfig(iters=args.iters, warmup=args.warmup, batch=args.batch, size=args.size, rounds=args.rounds,
                         mode=args.mode, duration=args.duration if args.duration is not None else DEFAULT_DURATION_S,
                         min_iters=args.min_iters)
    check_depth(args.depth, "--depth")
    if args.json:
        check_writable(args.json, "--json")
    paths = args.artifact or [_default_engine(args.engines_dir)]
    if args.json:
        check_report_path(args.json, paths)
    segmenters: list[Segmenter] = []
    try:
        for path in paths:
            segmenters.append(Segmenter(path, backend=args.backend, depth=args.depth, device=args.device))
        results = run_bench(segmenters, config)
    finally:
        for s in segmenters:
            s.close()
    rep = report(results, config, args._argv)
    print(format_table(rep))
    if args.json:
        print(f"wrote {write_report(rep, args.json)}", file=sys.stderr)
    return 0
