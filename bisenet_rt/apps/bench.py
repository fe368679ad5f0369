"""The paper's speed protocol: time the whole Segmenter call, host uint8 frame in, host labels out.

The resize to the model size and back is inside the timed call, as in the paper (2048x1024 frames,
5000 iterations). Several artifacts are timed side by side in interleaved rounds, so a noisy
machine slows all of them alike and the ratios hold.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..samples import street_frame
from ..sizes import check_batch, check_frame_size

__all__ = ["BenchConfig", "MODES", "EngineResult", "run_bench", "latency_stats", "report", "format_table", "write_report",
           "machine_info"]


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to time: iterations per artifact, warm-up calls, batch, frame size (w, h), rounds, and the mode.

    `latency` times one call at a time (the paper's protocol). `throughput` keeps `depth` submissions
    in flight (`Segmenter.stream`) and reports frames per second; its per-frame times are the
    intervals between consecutive results.
    """

    iters: int = 5000
    warmup: int = 50
    batch: int = 1
    size: tuple[int, int] = (2048, 1024)
    rounds: int = 10
    seed: int = 0
    mode: str = "latency"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("iters", "rounds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be >= 0, got {self.warmup}")
        check_batch(self.batch, "--batch")
        check_frame_size(self.size, "--size", "no frame above it is accepted")


#: Bench modes (see BenchConfig).
MODES = ("latency", "throughput")


@dataclasses.dataclass
class EngineResult:
    """Timings of one artifact: per-call latencies (ms) and, where measured, device-only times."""

    path: str
    backend: str
    precision: str
    device: str
    versions: dict[str, str]
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    device_ms: list[float] = dataclasses.field(default_factory=list)
    depth: int = 1  # submissions in flight (1: latency mode)

    def summary(self, batch: int) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "backend": self.backend, "precision": self.precision, "device": self.device,
               "versions": self.versions, "iterations": len(self.latencies_ms), "depth": self.depth,
               "latency_ms": latency_stats(self.latencies_ms)}
        out["fps"] = round(batch * 1000.0 / out["latency_ms"]["mean"], 2)
        if self.device_ms:
            out["device_time_ms"] = latency_stats(self.device_ms)
        return out


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """mean / p50 / p90 / p99 / max / min of latencies in milliseconds."""
    a = np.asarray(samples_ms, dtype=np.float64)
    stats = {"mean": a.mean(), "p50": np.percentile(a, 50), "p90": np.percentile(a, 90),
             "p99": np.percentile(a, 99), "max": a.max(), "min": a.min()}
    return {k: round(float(v), 3) for k, v in stats.items()}


def machine_info() -> dict[str, Any]:
    """CPU (model, class, the flags that matter), core counts, OS and Python, for the report (GPU names come
    from the backends)."""
    from ..host import FLAGS_OF_INTEREST, cpu_features, cpu_flags, cpu_name, physical_cores

    return {"cpu": cpu_name(), "cpu_class": cpu_features().label,
            "cpu_flags": [f for f in FLAGS_OF_INTEREST if f in cpu_flags()],
            "logical_cores": os.cpu_count(), "physical_cores": physical_cores(),
            "os": platform.platform(), "python": platform.python_version(), "host": platform.node()}


def _rounds(iters: int, rounds: int) -> list[int]:
    rounds = min(rounds, iters)
    base, extra = divmod(iters, rounds)
    return [base + (i < extra) for i in range(rounds)]


def run_bench(segmenters: Sequence[Any], config: BenchConfig, *, progress: bool = True) -> list[EngineResult]:
    """Time each Segmenter on the same frame batch, interleaving rounds; returns per-artifact timings."""
    w, h = config.size
    frames = np.stack([street_frame(h, w, seed=config.seed + i) for i in range(config.batch)])
    batch: np.ndarray = frames if config.batch > 1 else frames[0]
    throughput = config.mode == "throughput"
    results = [EngineResult(str(s.path), s.backend.name, s.precision.value, s.device, s.backend.versions(),
                            depth=s.depth if throughput else 1) for s in segmenters]
    for seg in segmenters:
        for _ in range(config.warmup):
            seg(batch)
        if throughput:
            for _ in seg.stream(itertools.repeat(batch, max(config.warmup, seg.depth)), copy=False):
                pass
    total = config.iters * len(segmenters)
    with _progress_bar(total, progress) as bar:
        for chunk in _rounds(config.iters, config.rounds):
            for seg, res in zip(segmenters, results):
                if throughput:
                    last = time.perf_counter_ns()
                    for _ in seg.stream(itertools.repeat(batch, chunk), copy=False):  # the frames never change
                        now = time.perf_counter_ns()
                        res.latencies_ms.append((now - last) / 1e6)
                        last = now
                else:
                    for _ in range(chunk):
                        t0 = time.perf_counter_ns()
                        seg(batch)
                        res.latencies_ms.append((time.perf_counter_ns() - t0) / 1e6)
                        device = seg.backend.last_device_time_ms()
                        if device is not None:
                            res.device_ms.append(device)
                bar.update(chunk)
    return results


def _progress_bar(total: int, show: bool) -> Any:
    """A tqdm bar on stderr; without `show`, a stand-in (so a bare GPU box without tqdm can still time)."""
    if show:
        from tqdm import tqdm

        return tqdm(total=total, desc="bench", unit="it", file=sys.stderr)

    class _Silent(contextlib.nullcontext):
        def __enter__(self) -> "_Silent":
            return self

        def update(self, n: int) -> None:
            pass

    return _Silent()


def report(results: Sequence[EngineResult], config: BenchConfig, argv: Sequence[str]) -> dict[str, Any]:
    """The JSON report: machine, versions, config, command and per-artifact statistics with ratios."""
    summaries = [r.summary(config.batch) for r in results]
    base = summaries[0]["fps"]
    for s in summaries:
        s["fps_ratio_to_first"] = round(s["fps"] / base, 3)
    return {
        "command": "bisenet-rt " + shlex.join(argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {"iters": config.iters, "warmup": config.warmup, "batch": config.batch,
                   "size": f"{config.size[0]}x{config.size[1]}", "rounds": config.rounds, "mode": config.mode,
                   "protocol": "host uint8 BGR frame -> Segmenter call (resize, model, upsample, arg-max) -> host labels"
                               + ("; depth submissions in flight, times between results" if config.mode == "throughput"
                                  else "; one call at a time")},
        "results": summaries,
    }


def format_table(rep: dict[str, Any]) -> str:
    """A markdown table of one report, one row per artifact, ratios against the first."""
    mode = rep["config"].get("mode", "latency")
    depth = f" (depth {rep['results'][0]['depth']})" if mode == "throughput" and rep["results"] else ""
    lines = [f"{rep['config']['size']} frames, batch {rep['config']['batch']}, {rep['config']['iters']} iterations "
             f"each, {mode} mode{depth}, on {rep['machine']['cpu']}",
             "",
             "| artifact | backend | precision | device | FPS | mean ms | p50 | p90 | p99 | max | x first |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep["results"]:
        lat = r["latency_ms"]
        lines.append(f"| {Path(r['path']).name} | {r['backend']} | {r['precision']} | {r['device']} | {r['fps']:.2f} | "
                     f"{lat['mean']:.2f} | {lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} | {lat['max']:.2f} | "
                     f"{r['fps_ratio_to_first']:.2f} |")
        if "device_time_ms" in r:
            lines.append(f"|  GPU-only (CUDA events) | | | | | {r['device_time_ms']['mean']:.2f} | "
                         f"{r['device_time_ms']['p50']:.2f} | {r['device_time_ms']['p90']:.2f} | "
                         f"{r['device_time_ms']['p99']:.2f} | {r['device_time_ms']['max']:.2f} | |")
    return "\n".join(lines)


def write_report(rep: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the JSON report (creating folders)."""
    from ..atomic import write_atomic

    return write_atomic(path, (json.dumps(rep, indent=2) + "\n").encode())
