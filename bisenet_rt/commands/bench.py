"""Benchmark artifacts with the paper's protocol (resize inside the timed loop), side by side."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..sizes import check_depth
from ._common import check_report_path, check_writable, size_arg

HELP = "time artifacts end to end (frame in, labels out), the paper's protocol"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifact", "--engine", dest="artifact", action="append", type=Path, metavar="PATH",
                   help="artifact to time (.engine, .onnx, .xml, .pth); repeat to compare side by side "
                        "(default: the newest under engines/, built first if there is none)")
    p.add_argument("--backend", default="auto", help="backend for every --artifact (default: by suffix)")
    p.add_argument("--iters", type=int, default=5000, help="timed iterations per artifact (default 5000, the paper's)")
    p.add_argument("--warmup", type=int, default=50, help="untimed calls first (default 50)")
    p.add_argument("--batch", type=int, default=1, help="frames per call (default 1)")
    p.add_argument("--size", type=size_arg, default=(2048, 1024), metavar="WxH", help="frame size (default 2048x1024)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds when comparing (default 10)")
    p.add_argument("--mode", choices=["latency", "throughput"], default="latency",
                   help="latency: one call at a time (the paper's); throughput: --depth frames in flight, frames/s")
    p.add_argument("--depth", type=int, default=2, help="throughput mode: submissions in flight (default 2)")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the report here")
    p.add_argument("--engines-dir", type=Path, help="where to look for / build artifacts (default engines/, or "
                   "$BISENET_RT_ENGINES)")


def _default_engine(engines_dir: Path | None) -> Path:
    from ..artifacts import newest_artifact
    from ..builder import BuildConfig, build
    from ..settings import engines_dir as default_engines_dir

    engines_dir = engines_dir or default_engines_dir()
    found = newest_artifact(engines_dir)
    if found is not None:
        print(f"bench: using the newest artifact {found}", file=sys.stderr)
        return found
    print(f"bench: no artifact under {engines_dir}/; building the default for this machine first", file=sys.stderr)
    return build(BuildConfig(engines_dir=engines_dir))


def run(args: argparse.Namespace) -> int:
    from ..apps.bench import BenchConfig, format_table, report, run_bench, write_report
    from ..segmenter import Segmenter

    config = BenchConfig(iters=args.iters, warmup=args.warmup, batch=args.batch, size=args.size, rounds=args.rounds,
                         mode=args.mode)
    check_depth(args.depth, "--depth")
    if args.json:
        check_writable(args.json, "--json")
    paths = args.artifact or [_default_engine(args.engines_dir)]
    if args.json:
        check_report_path(args.json, paths)
    segmenters = [Segmenter(p, backend=args.backend, depth=args.depth) for p in paths]
    try:
        results = run_bench(segmenters, config)
    finally:
        for s in segmenters:
            s.close()
    rep = report(results, config, args._argv)
    print(format_table(rep))
    if args.json:
        print(f"wrote {write_report(rep, args.json)}", file=sys.stderr)
    return 0
