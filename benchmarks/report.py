"""Regenerate the README's benchmark table and the latency plot from `bisenet-rt bench --json` results.

    python benchmarks/report.py benchmarks/results/bench_cpu_*.json [--plot benchmarks/results/latency.png]

Prints one markdown table per report (with the command that produced it) and draws, per artifact,
the latency distribution (box plot) and the FPS (bars).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bisenet_rt.apps.bench import format_table


def plot(reports: list[dict], path: Path) -> Path:
    """Latency distribution and FPS per artifact, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{r['backend']} {r['precision']}\n{Path(r['path']).name}", r) for rep in reports for r in rep["results"]]
    fig, (ax_lat, ax_fps) = plt.subplots(1, 2, figsize=(12, 0.9 * len(rows) + 2.0))
    labels = [name for name, _ in rows]
    stats = [{"label": name, "whislo": r["latency_ms"]["min"], "q1": r["latency_ms"]["p50"],
              "med": r["latency_ms"]["p50"], "q3": r["latency_ms"]["p90"], "whishi": r["latency_ms"]["p99"],
              "fliers": [r["latency_ms"]["max"]]} for name, r in rows]
    ax_lat.bxp(stats, orientation="horizontal", showfliers=True)
    ax_lat.set_xlabel("latency per frame, ms (box: p50-p90, whiskers: min-p99, dot: max)")
    ax_fps.barh(range(1, len(rows) + 1), [r["fps"] for _, r in rows], color="#4c72b0")
    ax_fps.set_yticks(range(1, len(rows) + 1), labels)
    ax_fps.set_xlabel("frames per second")
    ax_fps.invert_yaxis()
    ax_lat.invert_yaxis()
    machine = reports[0]["machine"]["cpu"]
    fig.suptitle(f"BiSeNetV2, {reports[0]['config']['size']} frames end to end (resize included) - {machine}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("reports", nargs="+", type=Path, help="JSON files written by bisenet-rt bench --json")
    parser.add_argument("--plot", type=Path, help="write the latency / FPS plot here (PNG)")
    args = parser.parse_args(argv)
    reports = [json.loads(p.read_text()) for p in args.reports]
    for rep in reports:
        print(format_table(rep))
        print(f"\nCommand: `{rep['command']}` ({rep['date']})\n")
    if args.plot:
        print(f"wrote {plot(reports, args.plot)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
