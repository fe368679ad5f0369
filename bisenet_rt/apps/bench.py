"""The paper's speed protocol: time the whole Segmenter call, host uint8 frame in, host labels out.

The resize to the model size and back is inside the timed call, as in the paper (2048x1024 frames,
5000 iterations: `BenchConfig(iters=5000)`). By default a run is bounded by time instead, as trtexec's
is (`duration` seconds per artifact, at least `min_iters` calls), so it ends in seconds on any machine.
Several artifacts are timed side by side in interleaved rounds, so a noisy machine slows all of them
alike and the ratios hold.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..artifacts import RANDOM_WEIGHTS
from ..errors import ConfigError
from ..samples import street_frame
from ..sizes import check_batch, check_frame_size

__all__ = ["BenchConfig", "MODES", "EngineResult", "run_bench", "latency_stats", "report", "format_table", "write_report",
           "machine_info", "DEFAULT_DURATION_S", "DEFAULT_MIN_ITERS", "WARMUP_S", "PAPER_ITERS"]

_log = logging.getLogger(__name__)

#: Timed seconds per artifact by default, as trtexec's --duration (a run ends in seconds on any machine).
DEFAULT_DURATION_S = 10.0
#: The fewest timed calls per artifact of a run bounded by time, as trtexec's --iterations.
DEFAULT_MIN_ITERS = 10
#: Seconds of untimed calls per artifact before timing, unless a number of warm-up calls is given.
WARMUP_S = 2.0
#: The paper's protocol: 5000 timed iterations.
PAPER_ITERS = 5000


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to time: iterations per artifact (or seconds), warm-up calls, batch, frame size (w, h), rounds, mode.

    `iters` times that many calls per artifact (5000: the paper's protocol); without it (None) each
    artifact is timed for `duration` seconds and at least `min_iters` calls. `warmup` untimed calls
    per artifact come first (None: WARMUP_S seconds of calls, at least one). `latency` times one call
    at a time (the paper's protocol). `throughput` keeps `depth` submissions in flight
    (`Segmenter.stream`) and reports frames per second; its per-frame times are the intervals between
    consecutive results.
    """

    iters: int | None = None
    warmup: int | None = None
    batch: int = 1
    size: tuple[int, int] = (2048, 1024)
    rounds: int = 10
    seed: int = 0
    mode: str = "latency"
    duration: float = DEFAULT_DURATION_S
    min_iters: int = DEFAULT_MIN_ITERS

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("rounds", "min_iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.iters is not None and self.iters < 1:
            raise ConfigError(f"--iters must be at least 1, got {self.iters}")
        if not self.duration > 0:
            raise ConfigError(f"--duration must be more than 0 seconds, got {self.duration}")
        if self.warmup is not None and self.warmup < 0:
            raise ConfigError(f"--warmup must be >= 0, got {self.warmup}")
        check_batch(self.batch, "--batch")
        check_frame_size(self.size, "--size", "no frame above it is accepted")

    @property
    def by_time(self) -> bool:
        """Whether the run is bounded by `duration` (no fixed `iters`)."""
        return self.iters is None

    def describe(self) -> str:
        """How long each artifact is timed, in words."""
        if self.iters is not None:
            return f"{self.iters} iterations"
        return f"{self.duration:g} s (at least {self.min_iters} iterations)"


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
    random_weights: bool = False  # the artifact's facts say its weights were never trained (timings still hold)

    def summary(self, batch: int) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "backend": self.backend, "precision": self.precision, "device": self.device,
               "versions": self.versions, "iterations": len(self.latencies_ms), "depth": self.depth,
               "random_weights": self.random_weights, "latency_ms": latency_stats(self.latencies_ms)}
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
    """CPU (model, class, the flags that matter), core counts, load average, OS and Python, for the report (GPU
    names come from the backends)."""
    from ..host import FLAGS_OF_INTEREST, cpu_features, cpu_flags, cpu_name, physical_cores

    info: dict[str, Any] = {"cpu": cpu_name(), "cpu_class": cpu_features().label,
                            "cpu_flags": [f for f in FLAGS_OF_INTEREST if f in cpu_flags()],
                            "logical_cores": os.cpu_count(), "physical_cores": physical_cores()}
    if hasattr(os, "getloadavg"):  # other jobs on the machine slow every artifact alike; this says how busy it was
        info["load_average"] = dict(zip(("1min", "5min", "15min"), (round(v, 2) for v in os.getloadavg())))
    info.update({"os": platform.platform(), "python": platform.python_version(), "host": platform.node()})
    return info


def _rounds(iters: int, rounds: int) -> list[int]:
    rounds = min(rounds, iters)
    base, extra = divmod(iters, rounds)
    return [base + (i < extra) for i in range(rounds)]


def _until(deadline: float, batch: np.ndarray) -> Iterator[np.ndarray]:
    """The batch, again and again, until `deadline` (perf_counter seconds) has passed; at least once."""
    yield batch
    while time.perf_counter() < deadline:
        yield batch


def _time_calls(seg: Any, res: EngineResult, frames: Iterator[np.ndarray], throughput: bool) -> None:
    """Time one round of `seg` over `frames`: per call, or (throughput) the intervals between results."""
    if throughput:
        last = time.perf_counter_ns()
        for _ in seg.stream(frames, copy=False):  # the frames never change
            now = time.perf_counter_ns()
            res.latencies_ms.append((now - last) / 1e6)
            last = now
        return
    for batch in frames:
        t0 = time.perf_counter_ns()
        seg(batch)
        res.latencies_ms.append((time.perf_counter_ns() - t0) / 1e6)
        device = seg.backend.last_device_time_ms()
        if device is not None:
            res.device_ms.append(device)


def _warm_up(seg: Any, batch: np.ndarray, config: BenchConfig) -> float | None:
    """Untimed calls (`config.warmup`, or WARMUP_S seconds of them); returns the seconds a call took (the median
    after the first, which pays for lazy set-up), or None without warm-up calls."""
    took: list[float] = []
    deadline = time.perf_counter() + WARMUP_S
    calls: Iterator[int] = itertools.count() if config.warmup is None else iter(range(config.warmup))
    for i in calls:
        if config.warmup is None and i and time.perf_counter() >= deadline:
            break
        t0 = time.perf_counter()
        seg(batch)
        took.append(time.perf_counter() - t0)
    if config.mode == "throughput":  # fill the pipeline once, as the timed rounds will
        for _ in seg.stream(itertools.repeat(batch, max(len(took), seg.depth)), copy=False):
            pass
    return float(np.median(took[1:] if len(took) > 1 else took)) if took else None


def _eta(config: BenchConfig, per_call_s: Sequence[float | None], batch: int) -> str:
    """The plan of a run in words, with its expected length where the warm-up measured the calls."""
    n = len(per_call_s)
    what = f"timing {n} artifacts for {config.describe()} each" if n > 1 else f"timing for {config.describe()}"
    known = [t for t in per_call_s if t is not None]
    if len(known) < n:
        return what
    if config.iters is not None:
        seconds = sum(config.iters * t for t in known)
    else:
        seconds = sum(max(config.duration, config.min_iters * t) for t in known)
    calls = ", ".join(f"{1000 * t:.0f}" for t in known)
    return f"{what}: about {_duration(seconds)} ({calls} ms per call of {batch} frame{'s' if batch > 1 else ''})"


def _duration(seconds: float) -> str:
    """'45 s', '12 min 5 s', '1 h 20 min'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def run_bench(segmenters: Sequence[Any], config: BenchConfig, *, progress: bool = True) -> list[EngineResult]:
    """Time each Segmenter on the same frame batch, interleaving rounds; returns per-artifact timings.

    Logs the plan, with how long it will take as measured by the warm-up, before the timed rounds start.
    """
    w, h = config.size
    frames = np.stack([street_frame(h, w, seed=config.seed + i) for i in range(config.batch)])
    batch: np.ndarray = frames if config.batch > 1 else frames[0]
    throughput = config.mode == "throughput"
    results = [EngineResult(str(s.path), s.backend.name, s.precision.value, s.device, s.backend.versions(),
                            depth=s.depth if throughput else 1, random_weights=bool(getattr(s, "random_weights", False)))
               for s in segmenters]
    per_call = [_warm_up(seg, batch, config) for seg in segmenters]
    _log.info(f"bench: {_eta(config, per_call, config.batch)}; Ctrl-C stops")
    if config.iters is not None:
        with _progress_bar(config.iters * len(segmenters), "it", progress) as bar:
            for chunk in _rounds(config.iters, config.rounds):
                for seg, res in zip(segmenters, results):
                    _time_calls(seg, res, itertools.repeat(batch, chunk), throughput)
                    bar.update(chunk)
        return results
    # Each round gives every artifact a slice of its duration; a slice overrun by its last call shortens the next.
    slice_s = config.duration / config.rounds
    spent = [0.0] * len(segmenters)
    with _progress_bar(config.duration * len(segmenters), "s", progress) as bar:
        while any(t < config.duration or len(r.latencies_ms) < config.min_iters for t, r in zip(spent, results)):
            for i, (seg, res) in enumerate(zip(segmenters, results)):
                if spent[i] >= config.duration and len(res.latencies_ms) >= config.min_iters:
                    continue
                started = time.perf_counter()
                _time_calls(seg, res, _until(started + min(slice_s, config.duration - spent[i]), batch), throughput)
                spent[i] += time.perf_counter() - started
                bar.update(min(time.perf_counter() - started, bar.total - bar.n))
    return results


def _progress_bar(total: float, unit: str, show: bool) -> Any:
    """A tqdm bar on stderr; without `show`, a stand-in (so a bare GPU box without tqdm can still time)."""
    if show:
        from tqdm import tqdm

        if unit == "s":  # seconds timed so far, of the run's total
            return tqdm(total=total, desc="bench", file=sys.stderr,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]")
        return tqdm(total=total, desc="bench", unit=unit, file=sys.stderr)

    class _Silent(contextlib.nullcontext):
        n = total = 0.0

        def __enter__(self) -> "_Silent":
            return self

        def update(self, n: float) -> None:
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
        "config": {"iters": config.iters, "duration_s": None if config.iters is not None else config.duration,
                   "min_iters": None if config.iters is not None else config.min_iters,
                   "warmup": config.warmup if config.warmup is not None else f"{WARMUP_S:g} s",
                   "batch": config.batch, "size": f"{config.size[0]}x{config.size[1]}", "rounds": config.rounds,
                   "mode": config.mode,
                   "protocol": "host uint8 BGR frame -> Segmenter call (resize, model, upsample, arg-max) -> host labels"
                               + ("; depth submissions in flight, times between results" if config.mode == "throughput"
                                  else "; one call at a time")},
        "results": summaries,
    }


def _timed(rep: dict[str, Any]) -> str:
    """How long each artifact was timed, from a report (reports before `duration_s` have `iters` only)."""
    config = rep["config"]
    if config.get("iters") is not None:
        return f"{config['iters']} iterations each"
    return f"{config['duration_s']:g} s each (at least {config['min_iters']} iterations)"


def format_table(rep: dict[str, Any]) -> str:
    """A markdown table of one report, one row per artifact, ratios against the first."""
    mode = rep["config"].get("mode", "latency")
    throughput = mode == "throughput"
    depth = f" (depth {rep['results'][0]['depth']})" if throughput and rep["results"] else ""
    what = "ms between results" if throughput else "ms per call"
    lines = [f"{rep['config']['size']} frames, batch {rep['config']['batch']}, {_timed(rep)}, {mode} mode{depth} "
             f"({what}), on {rep['machine']['cpu']}",
             "",
             "| artifact | backend | precision | device | iterations | frames/s | mean ms | min ms | p50 ms | p90 ms | "
             "p99 ms | max ms | frames/s vs first row |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep["results"]:
        lat = r["latency_ms"]
        lines.append(f"| {Path(r['path']).name} | {r['backend']} | {r['precision']} | {r['device']} | {r['iterations']} | "
                     f"{r['fps']:.2f} | {lat['mean']:.2f} | {lat['min']:.2f} | {lat['p50']:.2f} | {lat['p90']:.2f} | "
                     f"{lat['p99']:.2f} | {lat['max']:.2f} | {r['fps_ratio_to_first']:.2f} |")
        if "device_time_ms" in r:
            dev = r["device_time_ms"]
            lines.append(f"|  GPU-only (CUDA events) | | | | | | {dev['mean']:.2f} | {dev['min']:.2f} | {dev['p50']:.2f} | "
                         f"{dev['p90']:.2f} | {dev['p99']:.2f} | {dev['max']:.2f} | |")
    random = [Path(r["path"]).name for r in rep["results"] if r.get("random_weights")]
    if random:
        lines += ["", f"{', '.join(random)}: {RANDOM_WEIGHTS} (the timings hold)"]
    return "\n".join(lines)


def write_report(rep: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the JSON report (creating folders)."""
    from ..atomic import write_atomic

    return write_atomic(path, (json.dumps(rep, indent=2) + "\n").encode())
