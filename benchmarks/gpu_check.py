"""The GPU acceptance check: everything this project can run on an NVIDIA GPU, in one command.

    make gpu-check                         # or: python benchmarks/gpu_check.py [--iters 5000] [--quick]

On a machine with TensorRT 10 or 11 it builds FP32, FP16 and INT8 engines of the demo model, runs the
GPU tests, times each engine with `bisenet-rt bench`'s protocol (2048x1024 host frame in, labels out,
resize included) with CUDA-event device times, and scores FP16/INT8 against FP32 (agreement and mIoU)
on `bisenet-rt synth` frames. Without TensorRT (PyTorch, CuPy and cuda-bindings only) it runs what it
can: the cuda-python layer (pinned/device copies, events, CUDA-graph capture and replay), the GPU tests
that need only CUDA, and the PyTorch path on CUDA (the deployed layout in CUDA graphs) in FP32 and FP16;
every skipped part says why. Engines and the PyTorch path are timed in both `bench` modes (latency:
one call at a time; throughput: 3 submissions in flight).
One JSON lands in benchmarks/results/gpu_check_<date>.json; the exit code is 0 when nothing failed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "bisenet_rt" / "assets" / "demo_bisenetv2_synth.pth"
FRAME_W, FRAME_H = 2048, 1024


def _step(results: dict[str, Any], name: str, run: Callable[[], dict[str, Any]]) -> None:
    """Run one part; record its result, or why it was skipped or failed (the check goes on either way)."""
    print(f"== {name}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        out = run()
    except _Skip as skip:
        out = {"status": "skipped", "reason": str(skip)}
    except Exception as exc:  # noqa: BLE001  (a failed part is recorded, the others still run)
        out = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    out.setdefault("status", "ok")
    out["seconds"] = round(time.perf_counter() - started, 1)
    results[name] = out
    print(f"   {out['status']}{': ' + out.get('reason', out.get('error', '')) if out['status'] != 'ok' else ''}",
          file=sys.stderr, flush=True)


class _Skip(Exception):
    """This part cannot run here; the message says why."""


def _environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for module in ("torch", "cupy", "tensorrt", "onnxruntime"):
        try:
            env[module] = __import__(module).__version__
        except Exception as exc:  # noqa: BLE001  (ImportError, or a library that fails to load)
            env[module] = f"unavailable ({type(exc).__name__})"
    try:
        from importlib.metadata import version

        env["cuda-bindings"] = version("cuda-bindings")
    except Exception:  # noqa: BLE001
        env["cuda-bindings"] = "unavailable"
    try:
        from bisenet_rt import cuda

        major, minor = cuda.compute_capability()
        env["gpu"] = {"name": cuda.device_name(), "compute_capability": f"{major}.{minor}",
                      "cuda_runtime": cuda.runtime_version(), "cuda_driver": cuda.driver_version()}
    except Exception as exc:  # noqa: BLE001
        env["gpu"] = f"unavailable ({exc})"
    from bisenet_rt.backends.tensorrt import tensorrt_availability

    env["tensorrt_usable"] = tensorrt_availability() or "yes"
    return env


def _gpu_tests() -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_tensorrt.py"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    skips = [line for line in lines if line.startswith("SKIPPED")]
    return {"status": "ok" if proc.returncode == 0 else "failed", "command": shlex.join(cmd[2:]),
            "summary": lines[-1] if lines else proc.stderr[-2000:], "skipped": skips,
            **({"output_tail": proc.stdout[-6000:]} if proc.returncode else {})}


def _cuda_layer(iters: int) -> dict[str, Any]:
    try:
        from bisenet_rt import cuda

        cuda.device_name()
    except Exception as exc:  # noqa: BLE001
        raise _Skip(f"no usable CUDA device through cuda-python ({exc})") from None
    in_bytes, out_bytes = FRAME_H * FRAME_W * 3, FRAME_H * FRAME_W
    with cuda.PinnedBuffer(in_bytes) as host_in, cuda.PinnedBuffer(out_bytes) as host_out, \
            cuda.DeviceBuffer(in_bytes) as dev_in, cuda.DeviceBuffer(out_bytes) as dev_out:
        stream, start, end = cuda.Stream(), cuda.Event(), cuda.Event()
        host_in.view((in_bytes,))[:] = np.arange(in_bytes, dtype=np.uint64).astype(np.uint8)

        def copies() -> None:
            dev_in.copy_from_host(host_in, in_bytes, stream)
            dev_out.copy_to_host(host_out, out_bytes, stream)

        def timed(work: Callable[[], None]) -> list[float]:
            times = []
            for _ in range(iters):
                start.record(stream)
                work()
                end.record(stream)
                times.append(end.elapsed_ms(start))
            return times

        plain = timed(copies)
        graph = cuda.CudaGraph.capture(stream, copies)
        replay = timed(lambda: graph.launch(stream))
        stream.synchronize()
        same = bool(np.array_equal(host_out.view((out_bytes,)), host_in.view((in_bytes,))[:out_bytes]))
        graph.close()
        stream.close()
        start.close()
        end.close()
    gbps = (in_bytes + out_bytes) / (np.median(plain) * 1e6)
    return {"frame_bytes": in_bytes, "label_bytes": out_bytes, "iterations": iters,
            "copy_ms_p50": round(float(np.median(plain)), 4), "graph_replay_ms_p50": round(float(np.median(replay)), 4),
            "pinned_copy_GBps": round(float(gbps), 2), "graph_replay_copied_the_data": same}


def _torch_reference(iters: int, warmup: int) -> dict[str, Any]:
    """The PyTorch path on CUDA (deployed layout, CUDA graphs), FP32 and FP16, latency and throughput modes."""
    try:
        import torch
    except ImportError:
        raise _Skip("PyTorch is not installed") from None
    if not torch.cuda.is_available():
        raise _Skip("PyTorch sees no CUDA device")
    from bisenet_rt import Segmenter
    from bisenet_rt.bench import BenchConfig, report, run_bench

    out: dict[str, Any] = {"weights": str(DEMO.relative_to(REPO)), "device": torch.cuda.get_device_name()}
    for precision in ("fp32", "fp16"):
        with Segmenter(DEMO, device="cuda", precision=precision, depth=3) as seg:
            for mode in ("latency", "throughput"):
                config = BenchConfig(iters=iters, warmup=warmup, size=(FRAME_W, FRAME_H), rounds=5, mode=mode)
                rep = report(run_bench([seg], config, progress=False), config, ["gpu_check", precision, mode])
                out[f"{precision}/{mode}"] = rep["results"][0]
            out[f"{precision}/cuda_graphs"] = seg.runner.graph_stats
    out["protocol"] = rep["config"]["protocol"]
    return out


def _tensorrt(work: Path, iters: int, warmup: int, calib_count: int) -> dict[str, Any]:
    from bisenet_rt.backends.tensorrt import tensorrt_availability

    missing = tensorrt_availability()
    if missing:
        raise _Skip(f"TensorRT cannot run here: {missing}")
    from bisenet_rt import Segmenter
    from bisenet_rt.bench import BenchConfig, report, run_bench
    from bisenet_rt.builders import BuildConfig, build
    from bisenet_rt.data import open_dataset
    from bisenet_rt.evaluate import evaluate
    from bisenet_rt.evaluate import report as eval_report
    from bisenet_rt.data.synth import write_dataset

    data = work / "synth"
    write_dataset(data, n=max(calib_count + 20, 40), seed=0, progress=False)
    engines = {}
    for precision in ("fp32", "fp16", "int8"):
        extra = {"calib": data / "leftImg8bit" / "train", "calib_count": calib_count} if precision == "int8" else {}
        engines[precision] = build(BuildConfig(precision=precision, backend="tensorrt", weights=DEMO,
                                               engines_dir=work / "engines",
                                               output=work / "engines" / f"bisenetv2_{precision}.engine", **extra))
    segs = [Segmenter(engines[p], depth=3) for p in ("fp32", "fp16", "int8")]
    try:
        bench = {}
        for mode in ("latency", "throughput"):
            config = BenchConfig(iters=iters, warmup=warmup, size=(FRAME_W, FRAME_H), rounds=10, mode=mode)
            bench[mode] = report(run_bench(segs, config, progress=False), config,
                                 ["bench", "--iters", str(iters), "--mode", mode])
        graphs = {s.precision.value: vars(s.runner.graph_stats) for s in segs}
        scores = eval_report(evaluate(segs, open_dataset(data, "val"), progress=False), open_dataset(data, "val"))
    finally:
        for seg in segs:
            seg.close()
    return {"engines": {k: str(v) for k, v in engines.items()}, "bench": bench, "cuda_graphs": graphs,
            "accuracy_on_synth_val": scores}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=5000, help="timed iterations per engine (paper: 5000)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--calib-count", type=int, default=64, help="INT8 calibration frames (synthetic)")
    parser.add_argument("--quick", action="store_true", help="200 iterations, 16 calibration frames: a smoke run")
    parser.add_argument("--skip-tests", action="store_true", help="do not run the GPU tests")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.iters, args.warmup, args.calib_count = 200, 10, 16

    results: dict[str, Any] = {
        "command": "python " + shlex.join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _step(results, "environment", _environment)
    if not args.skip_tests:
        _step(results, "gpu_tests", _gpu_tests)
    _step(results, "cuda_layer", lambda: _cuda_layer(min(args.iters, 1000)))
    _step(results, "torch_reference", lambda: _torch_reference(min(args.iters, 1000), args.warmup))
    with tempfile.TemporaryDirectory(prefix="bisenet_rt_gpu_check_") as tmp:
        _step(results, "tensorrt", lambda: _tensorrt(Path(tmp), args.iters, args.warmup, args.calib_count))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu_check_{datetime.date.today().isoformat()}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    statuses = {k: v["status"] for k, v in results.items() if isinstance(v, dict) and "status" in v}
    print(json.dumps(statuses), file=sys.stderr)
    print(f"wrote {path}", file=sys.stderr)
    return 1 if "failed" in statuses.values() else 0


if __name__ == "__main__":
    sys.exit(main())
