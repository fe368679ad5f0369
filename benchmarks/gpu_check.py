"""The GPU acceptance check: everything this project can run on an NVIDIA GPU, in one command.

    make gpu-check                         # or: python benchmarks/gpu_check.py [--iters 5000] [--quick]
    python benchmarks/gpu_check.py --plan-on-cpu --quick    # the same plan rehearsed on the CPU

The plan, step by step; each step ends `ok`, `skipped` (with the reason) or `failed` (with the error and
whatever it measured before failing), and one step's failure does not stop the next:
  environment      versions, the GPU, and the NVIDIA driver against the CUDA major of the installed wheels
  gpu_tests        tests/test_tensorrt.py (its GPU tests skip, with the reason, where TensorRT or a GPU is absent)
  cuda_layer       cuda-python: pinned and device copies, events, a CUDA graph captured and replayed (data checked)
  torch_reference  the PyTorch path on CUDA (deployed layout, CUDA graphs) in FP32 and FP16
  tensorrt         FP32, FP16 and INT8 engines of the demo model (profile: 2048x1024 frames, as `bisenet-rt build`),
                   timed with `bench`'s protocol in both modes (latency; throughput with 3 in flight; CUDA-event
                   device times), then FP16/INT8 scored against FP32 on `bisenet-rt synth` frames of that size
Without TensorRT (PyTorch, CuPy and cuda-bindings only) the tensorrt step is skipped and the rest runs.

`--plan-on-cpu` walks the same plan here, so an orchestration bug fails on the CPU instead of in a short GPU
window: the same steps, frame sizes, profiles, dataset, evaluation and JSON. In place of each engine, ONNX
Runtime runs the very ONNX graph `bisenet-rt build` would hand TensorRT (exported, INT8-quantized for
TensorRT and checked against the parser's rules by the builder's own code), with the sidecar the engine
would get (its frame-size profile, so frames outside it are refused as the engine refuses them); the
PyTorch step runs FP32 on the CPU. What needs CUDA says it was skipped and why.

One JSON lands in benchmarks/results/gpu_check_<date>.json (gpu_check_plan_on_cpu_<date>.json for the
rehearsal; an existing file is never overwritten). Exit code: 0 when no step failed (skips are not
failures), 1 when one did, 2 when the check could not start (bisenet_rt not importable).
"""
from __future__ import annotations

import argparse
import dataclasses
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

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "bisenet_rt" / "assets" / "demo_bisenetv2_synth.pth"
#: The frame every step feeds (the paper's protocol; `bisenet-rt build`'s default engine profile).
FRAME = (2048, 1024)
PRECISIONS = ("fp32", "fp16", "int8")
MODES = ("latency", "throughput")
DEPTH = 3  # submissions in flight in throughput mode
STEPS = ("environment", "gpu_tests", "cuda_layer", "torch_reference", "tensorrt")
EXIT_OK, EXIT_FAILED, EXIT_CANNOT_START = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run does: on the GPU, or rehearsed on the CPU; how long it times; how much data it makes."""

    on_cpu: bool
    iters: int
    warmup: int
    calib_count: int
    eval_frames: int
    run_tests: bool

    def to_json(self) -> dict[str, Any]:
        return {"target": "cpu rehearsal (ONNX Runtime stands in for the engines)" if self.on_cpu else "gpu",
                "frame": f"{FRAME[0]}x{FRAME[1]}", **dataclasses.asdict(self)}


class _Skip(Exception):
    """This step cannot run here; the message says why."""


def _step(results: dict[str, Any], name: str, run: Callable[[dict[str, Any]], None]) -> None:
    """Run one step, which writes what it measures into the dict it is given as it goes; record `ok`, or
    `skipped` with the reason, or `failed` with the error next to everything measured before it."""
    print(f"== {name}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    found: dict[str, Any] = {}
    try:
        run(found)
        out = {"status": "ok", **found}
    except _Skip as skip:
        out = {"status": "skipped", "reason": str(skip), **found}
    except Exception as exc:  # noqa: BLE001  (a failed step is recorded, the others still run)
        out = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
               **found}
    out["seconds"] = round(time.perf_counter() - started, 1)
    results[name] = out
    detail = out.get("reason", out.get("error", ""))
    print(f"   {out['status']}{': ' + detail if detail else ''}", file=sys.stderr, flush=True)


# -- environment -----------------------------------------------------------------------------------------
def _environment(found: dict[str, Any]) -> None:
    found.update({"python": platform.python_version(), "platform": platform.platform()})
    for module in ("torch", "cupy", "tensorrt", "onnxruntime"):
        try:
            found[module] = __import__(module).__version__
        except Exception as exc:  # noqa: BLE001  (ImportError, or a library that fails to load)
            found[module] = f"unavailable ({type(exc).__name__})"
    from importlib.metadata import PackageNotFoundError, version

    try:
        found["cuda-bindings"] = version("cuda-bindings")
    except PackageNotFoundError:
        found["cuda-bindings"] = "unavailable"
    found["driver"] = _driver()
    from bisenet_rt.backends.tensorrt import tensorrt_availability

    found["tensorrt_usable"] = tensorrt_availability() or "yes"
    try:
        from bisenet_rt.backends.tensorrt import cuda

        if cuda.device_problem() is None:
            major, minor = cuda.compute_capability()
            found["gpu"] = {"name": cuda.device_name(), "compute_capability": f"{major}.{minor}",
                            "cuda_runtime": cuda.runtime_version(), "cuda_driver": cuda.driver_version()}
        else:
            found["gpu"] = "unavailable"
    except Exception as exc:  # noqa: BLE001  (recorded; the steps that need the GPU say why they skip)
        found["gpu"] = f"unavailable ({exc})"


def _driver() -> dict[str, Any]:
    """The NVIDIA driver against the CUDA major of each installed GPU wheel, with the one-line fix if they clash."""
    try:
        from bisenet_rt.backends.tensorrt import cuda

        facts = cuda.driver_facts()
        wheels = {"cuda-bindings": cuda.runtime_major()}
    except Exception as exc:  # noqa: BLE001  (no cuda-python: nothing to compare)
        return {"problem": str(exc)}
    from bisenet_rt.backends.tensorrt import tensorrt_cuda_major

    trt_major = tensorrt_cuda_major()
    if trt_major is not None:
        wheels["tensorrt"] = trt_major
    torch_cuda = _torch_cuda_version()
    return {"version": facts.driver, "runs_cuda": f"{facts.cuda_major}.{facts.driver_cuda % 1000 // 10}",
            "wheels_cuda_major": wheels, "torch_cuda": torch_cuda, "problem": cuda.compatibility_problem(facts, wheels)}


def _torch_cuda_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.version.cuda


# -- the GPU tests -------------------------------------------------------------------------------------------
def _gpu_tests(plan: Plan, found: dict[str, Any]) -> None:
    if not plan.run_tests:
        raise _Skip("--skip-tests was given")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_tensorrt.py"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    found.update({"command": shlex.join(cmd[2:]), "summary": lines[-1] if lines else proc.stderr[-2000:],
                  "skipped": [line for line in lines if line.startswith("SKIPPED")]})
    if proc.returncode != 0:
        found["output_tail"] = proc.stdout[-6000:]
        raise RuntimeError(f"pytest exited with {proc.returncode}: {found['summary']}")


# -- the CUDA layer ------------------------------------------------------------------------------------------
def _cuda_layer(plan: Plan, found: dict[str, Any]) -> None:
    """Pinned -> device -> pinned copies of a frame's bytes, plain and as a replayed CUDA graph; the replay must
    deliver data written after the capture."""
    import numpy as np

    from bisenet_rt.backends.tensorrt import cuda

    problem = cuda.device_problem()
    if problem is not None:
        raise _Skip(f"no usable CUDA device through cuda-python: {problem}")
    iters = min(plan.iters, 1000)
    in_bytes, out_bytes = FRAME[0] * FRAME[1] * 3, FRAME[0] * FRAME[1]
    found.update({"frame_bytes": in_bytes, "label_bytes": out_bytes, "iterations": iters})
    with cuda.PinnedBuffer(in_bytes) as host_in, cuda.PinnedBuffer(out_bytes) as host_out, \
            cuda.DeviceBuffer(in_bytes) as dev_in:
        stream, start, end = cuda.Stream(), cuda.Event(), cuda.Event()
        try:
            def copies() -> None:  # the frame up, the first label-sized part of it back down
                dev_in.copy_from_host(host_in, in_bytes, stream)
                dev_in.copy_to_host(host_out, out_bytes, stream)

            def timed(work: Callable[[], None]) -> list[float]:
                times = []
                for _ in range(iters):
                    start.record(stream)
                    work()
                    end.record(stream)
                    times.append(end.elapsed_ms(start))
                return times

            plain = timed(copies)
            found["copy_ms_p50"] = round(float(np.median(plain)), 4)
            found["pinned_copy_GBps"] = round((in_bytes + out_bytes) / (float(np.median(plain)) * 1e6), 2)
            graph = cuda.CudaGraph.capture(stream, copies)
            try:
                host_in.view((in_bytes,))[:] = np.arange(in_bytes, dtype=np.uint64).astype(np.uint8)[::-1]
                host_out.view((out_bytes,))[:] = 0
                replay = timed(lambda: graph.launch(stream))
                stream.synchronize()
            finally:
                graph.close()
            found["graph_replay_ms_p50"] = round(float(np.median(replay)), 4)
            copied = bool(np.array_equal(host_out.view((out_bytes,)), host_in.view((in_bytes,))[:out_bytes]))
            found["graph_replay_copied_the_data"] = copied
            if not copied:
                raise RuntimeError("the replayed CUDA graph did not deliver the frame written after its capture")
        finally:
            for obj in (stream, start, end):
                obj.close()


# -- the PyTorch path ----------------------------------------------------------------------------------------
def _torch_reference(plan: Plan, found: dict[str, Any]) -> None:
    """The PyTorch path: on CUDA the deployed layout in CUDA graphs, FP32 and FP16; rehearsed, FP32 on the CPU."""
    try:
        import torch
    except ImportError:
        raise _Skip("PyTorch is not installed (pip install '.[gpu]' from the clone)") from None
    if not plan.on_cpu and not torch.cuda.is_available():
        raise _Skip("PyTorch sees no CUDA device")
    from bisenet_rt import Segmenter

    device = "cpu" if plan.on_cpu else "cuda"
    found.update({"weights": str(DEMO.relative_to(REPO)),
                  "device": "cpu" if plan.on_cpu else torch.cuda.get_device_name()})
    for precision in ("fp32", "fp16"):
        if plan.on_cpu and precision == "fp16":
            found["fp16"] = {"status": "skipped", "reason": "fp16 on the torch backend needs CUDA"}
            continue
        with Segmenter(DEMO, device=device, precision=precision, depth=DEPTH) as seg:
            _bench(plan, [seg], found, prefix=f"{precision}/", iters=min(plan.iters, 1000), rounds=5)
            found[f"{precision}/cuda_graphs"] = _graph_stats(seg.backend)


# -- TensorRT ------------------------------------------------------------------------------------------------
def _tensorrt(plan: Plan, work: Path, found: dict[str, Any]) -> None:
    """Build (or, rehearsed, stand in for) the three engines, time them, score FP16 and INT8 against FP32."""
    from bisenet_rt import Segmenter
    from bisenet_rt.artifacts import read_sidecar
    from bisenet_rt.data import open_dataset
    from bisenet_rt.data.synth import write_dataset
    from bisenet_rt.apps.evaluate import evaluate
    from bisenet_rt.apps.evaluate import report as eval_report

    if not plan.on_cpu:
        from bisenet_rt.backends.tensorrt import tensorrt_availability

        missing = tensorrt_availability()
        if missing:
            raise _Skip(f"TensorRT cannot run here: {missing}")
    configs = {p: _engine_config(p, work, plan) for p in PRECISIONS}
    for config in configs.values():  # before minutes of building: every frame the plan feeds fits the profile
        _check_plan_fits(config)
    data = work / "synth"
    n = plan.calib_count + plan.eval_frames
    write_dataset(data, n=n, seed=0, size=FRAME, val_fraction=plan.eval_frames / n, progress=False)
    found["dataset"] = {"frames": n, "val": plan.eval_frames, "size": f"{FRAME[0]}x{FRAME[1]}"}
    if plan.on_cpu:
        found["stand_in"] = ("onnxruntime runs the ONNX graph each engine would be built from, with the engine's "
                             "sidecar (frame-size profile)")
    found["engines"], found["profiles"] = {}, {}
    for precision, config in configs.items():
        artifact = _stand_in(config) if plan.on_cpu else _build(config)
        found["engines"][precision] = str(artifact)
        info = read_sidecar(artifact)["info"]
        found["profiles"][precision] = {key: info[key] for key in ("min_size", "max_size", "max_batch")}
    backend = "onnxruntime" if plan.on_cpu else "auto"
    segs = [Segmenter(found["engines"][p], backend=backend, depth=DEPTH) for p in PRECISIONS]
    try:
        found["bench"] = {}
        _bench(plan, segs, found["bench"], prefix="", iters=plan.iters, rounds=10)
        found["cuda_graphs"] = {s.precision.value: _graph_stats(s.backend) for s in segs}
        val = open_dataset(data, "val")
        found["accuracy_on_synth_val"] = eval_report(evaluate(segs, val, progress=False), val)
    finally:
        for seg in segs:
            seg.close()


def _engine_config(precision: str, work: Path, plan: Plan) -> Any:
    """The BuildConfig of one engine: the demo weights, `bisenet-rt build`'s default profile (FRAME only)."""
    from bisenet_rt.builder import BuildConfig

    calib = {"calib": work / "synth" / "leftImg8bit" / "train", "calib_count": plan.calib_count} \
        if precision == "int8" else {}
    return BuildConfig(precision=precision, backend="tensorrt", weights=DEMO, engines_dir=work / "engines",
                       output=work / "engines" / f"bisenetv2_{precision}.engine", min_size=FRAME, max_size=FRAME,
                       **calib)


def _check_plan_fits(config: Any) -> None:
    """The bench frame and the dataset frames, against the engine's profile (the check the engine makes)."""
    from bisenet_rt.backends.frames import check_size

    check_size((1, FRAME[1], FRAME[0]), config.min_size, config.max_size, config.max_batch,
               f"the planned {config.precision} engine")


def _build(config: Any) -> Path:
    from bisenet_rt.builder import build

    return build(config)


def _stand_in(config: Any) -> Path:
    """In place of the engine: the graph `build` would hand TensorRT (INT8: quantized for TensorRT), admitted by
    TensorRT's own build step (its parser rules, the engine's profile), with the sidecar `build` would write, as an
    ONNX Runtime artifact."""
    from bisenet_rt.artifacts import write_sidecar
    from bisenet_rt.atomic import write_atomic
    from bisenet_rt.backends import SPECS
    from bisenet_rt.builder import BuildPlan, prepare, rebuild_command, sidecar
    from bisenet_rt.builder.choice import host_facts, int8_weights

    spec = SPECS["tensorrt"]
    int8 = int8_weights(host_facts(), spec.name, config.int8_target) if config.precision.value == "int8" else None
    plan = BuildPlan(spec, config.precision, Path(config.output), "the CPU rehearsal of a TensorRT build", int8)
    started = time.perf_counter()
    source, info = prepare(plan, config)
    output = plan.output.with_suffix(".onnx")
    write_atomic(output, source.path.read_bytes())
    entries = sidecar(info, SPECS["onnxruntime"], source, time.perf_counter() - started, rebuild_command(config, plan),
                      {"stands_in_for": spec.name})
    write_sidecar(output, entries)
    return output


# -- shared ----------------------------------------------------------------------------------------------------
def _bench(plan: Plan, segs: list[Any], found: dict[str, Any], *, prefix: str, iters: int, rounds: int) -> None:
    """`bench`'s protocol at FRAME in both modes; each mode's report lands in `found` as soon as it is done."""
    from bisenet_rt.apps.bench import BenchConfig, report, run_bench

    for mode in MODES:
        config = BenchConfig(iters=iters, warmup=plan.warmup, size=FRAME, rounds=rounds, mode=mode)
        rep = report(run_bench(segs, config, progress=False), config,
                     ["bench", "--iters", str(iters), "--mode", mode, "--depth", str(DEPTH)])
        if len(segs) == 1:
            found[f"{prefix}{mode}"] = rep["results"][0]
            found.setdefault("protocol", {})[mode] = rep["config"]["protocol"]
        else:
            found[mode] = rep


def _graph_stats(runner: Any) -> Any:
    """A backend's CUDA-graph counts as JSON (None where it captures none)."""
    stats = getattr(runner, "graph_stats", None)
    return dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) and not isinstance(stats, type) else stats


# -- the run ---------------------------------------------------------------------------------------------------
def _output_path(folder: Path, on_cpu: bool) -> Path:
    """benchmarks/results/gpu_check[_plan_on_cpu]_<date>.json, numbered rather than overwriting an earlier run."""
    stem = f"gpu_check{'_plan_on_cpu' if on_cpu else ''}_{datetime.date.today().isoformat()}"
    path, n = folder / f"{stem}.json", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}_{n}.json"
    return path


def _importable() -> str | None:
    """None when bisenet_rt imports (from this checkout if it is not installed); else why not, in one line."""
    try:
        import bisenet_rt  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "bisenet_rt" or str(REPO) in sys.path:
            return f"bisenet_rt is not importable ({exc}); install it: pip install -e '.[gpu]'"
        sys.path.insert(0, str(REPO))  # run from a checkout without installing
        return _importable()
    except Exception as exc:  # noqa: BLE001  (a dependency that fails to load)
        return f"bisenet_rt is not importable ({type(exc).__name__}: {exc}); install it: pip install -e '.[gpu]'"
    return None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--plan-on-cpu", action="store_true",
                        help="rehearse the whole plan on the CPU, ONNX Runtime standing in for the engines")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 200 iterations (10 on the CPU), 16 calibration and 8 evaluation frames")
    parser.add_argument("--iters", type=int, help="timed iterations per engine (paper: 5000; the default)")
    parser.add_argument("--warmup", type=int, help="warm-up calls per engine (default 50)")
    parser.add_argument("--calib-count", type=int, help="INT8 calibration frames, synthetic (default 64)")
    parser.add_argument("--eval-frames", type=int, help="synthetic frames FP16/INT8 are scored on (default 20)")
    parser.add_argument("--skip-tests", action="store_true", help="do not run the GPU tests")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="folder for the JSON")
    args = parser.parse_args(argv)
    quick = {"iters": 10 if args.plan_on_cpu else 200, "warmup": 2, "calib_count": 16, "eval_frames": 8}
    full = {"iters": 5000, "warmup": 50, "calib_count": 64, "eval_frames": 20}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("iters", "calib_count", "eval_frames"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    why = _importable()
    if why is not None:
        print(f"gpu_check: {why}", file=sys.stderr)
        return EXIT_CANNOT_START
    plan = Plan(on_cpu=args.plan_on_cpu, iters=args.iters, warmup=args.warmup, calib_count=args.calib_count,
                eval_frames=args.eval_frames, run_tests=not args.skip_tests)
    results: dict[str, Any] = {
        "command": "python benchmarks/gpu_check.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "plan": plan.to_json(),
    }
    _step(results, "environment", _environment)
    _step(results, "gpu_tests", lambda found: _gpu_tests(plan, found))
    _step(results, "cuda_layer", lambda found: _cuda_layer(plan, found))
    _step(results, "torch_reference", lambda found: _torch_reference(plan, found))
    with tempfile.TemporaryDirectory(prefix="bisenet_rt_gpu_check_") as tmp:
        _step(results, "tensorrt", lambda found: _tensorrt(plan, Path(tmp), found))
    results["summary"] = {name: results[name]["status"] for name in STEPS}
    args.out.mkdir(parents=True, exist_ok=True)
    path = _output_path(args.out, plan.on_cpu)
    from bisenet_rt.atomic import write_atomic

    write_atomic(path, (json.dumps(results, indent=2, default=str) + "\n").encode())
    print(json.dumps(results["summary"]), file=sys.stderr)
    print(f"wrote {path}", file=sys.stderr)
    return EXIT_FAILED if "failed" in results["summary"].values() else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
