"""Where the in-graph pre/post-processing time goes, per operator, for every CPU path `cpu_limit.py` times.

Each artifact is built as `cpu_limit.py` builds it (reused from --workdir when there) and run on one uint8
2048 x 1024 frame with the runtime's own profiler: OpenVINO's per-node performance counters (compiled as the
OpenVINO backend compiles it, load-time marks included), ONNX Runtime's node profile (the backend's session
options). Every executed node is put in the part of the graph it came from (`pre/`, `post/` or the model; a
layout reorder the runtime inserted goes with the node it was made for) and summed per operator and kernel,
averaged over --calls. The runtimes' counters overlap and leave out their own gaps, so the sums are a breakdown,
not a second end-to-end time (that is `cpu_limit.py`). Writes
benchmarks/results/prepost_profile_<cpu class>_<date>[_<n>].json (numbered, never overwriting).

    python benchmarks/prepost_profile.py [--workdir DIR] [--calls 8] [--only openvino/bf16 ...] [--threads N]
        [--no-bf16-mark]
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from cpu_limit import DEMO, FRAME_HW, _available_paths, build_artifacts, source_commit, synth_calibration
from results_file import write_result

PARTS = ("pre", "post")


def _part(names: str, op: str) -> str:
    """'pre', 'post' or 'model' for a node of type `op` made from the graph nodes `names` (comma-separated). A TopK
    is the post-processing's arg-max (OpenVINO's ONNX reader leaves it unnamed; the model has none)."""
    if op == "TopK":
        return "post"
    for part in PARTS:
        if any(name.strip().startswith(f"{part}/") or f"_{part}/" in name for name in names.split(",")):
            return part
    return "model"


def profile_openvino(path: Path, precision: str, frame: Any, calls: int, threads: int,
                     bf16_mark: bool = True) -> dict[tuple[str, str, str], float]:
    """ms per call by (part, operator, kernel), from OpenVINO's performance counters (`bf16_mark` False: without
    the backend's BF16 arg-max mark, to see what it saves)."""
    import openvino as ov

    from bisenet_rt.backends.openvino.run import OV_PRECISION
    from bisenet_rt.backends.openvino.tune import bf16_argmax
    from bisenet_rt.precision import Precision

    core = ov.Core()
    model = core.read_model(str(path))
    if precision == "bf16" and bf16_mark:
        bf16_argmax(model)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": OV_PRECISION[Precision(precision)],
                                                 "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
                                                 "PERF_COUNT": "YES"})
    origin = {op.get_friendly_name(): op.get_rt_info()["originalLayersNames"].astype(str)
              for op in compiled.get_runtime_model().get_ordered_ops()}
    request = compiled.create_infer_request()
    request.infer({0: frame})
    out: dict[tuple[str, str, str], float] = collections.defaultdict(float)
    for _ in range(calls):
        request.infer({0: frame})
        for node in request.profiling_info:
            part = _part(origin.get(node.node_name) or node.node_name, node.node_type)
            out[(part, node.node_type, node.exec_type)] += node.real_time.total_seconds() * 1e3 / calls
    return out


def profile_onnxruntime(path: Path, int8: bool, frame: Any, calls: int, threads: int,
                        workdir: Path) -> dict[tuple[str, str, str], float]:
    """ms per call by (part, operator, provider), from ONNX Runtime's node profile."""
    import onnxruntime as ort

    from bisenet_rt.backends.onnxruntime.run import QDQ_DISABLED_OPTIMIZERS, session_options

    options = session_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / "ort_profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(QDQ_DISABLED_OPTIMIZERS) if int8 else None)
    feed = {session.get_inputs()[0].name: frame}
    for _ in range(calls + 1):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    out: dict[tuple[str, str, str], float] = collections.defaultdict(float)
    first_run = len(nodes) // (calls + 1)  # the first call (allocations) is left out
    for event in nodes[first_run:]:
        part = _part(event["name"][:-len("_kernel_time")], event["args"].get("op_name", "?"))
        out[(part, event["args"].get("op_name", "?"), event["args"].get("provider", "?"))] += event["dur"] / 1e3 / calls
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="artifacts built by cpu_limit.py (built here when missing)")
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--only", nargs="+", metavar="BACKEND/PRECISION")
    parser.add_argument("--threads", type=int, help="compute threads (default: the physical cores)")
    parser.add_argument("--calib-count", type=int, default=32)
    parser.add_argument("--no-bf16-mark", action="store_true",
                        help="compile OpenVINO BF16 without the backend's arg-max mark (`tune.bf16_argmax`)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bisenet_rt_prepost_profile_") as tmp:
        return run(args, args.workdir or Path(tmp), Path(tmp))


def run(args: argparse.Namespace, workdir: Path, scratch: Path) -> int:
    from bisenet_rt.apps.bench import machine_info
    from bisenet_rt.host import cpu_features, physical_cores
    from bisenet_rt.samples import street_frame

    workdir.mkdir(parents=True, exist_ok=True)
    threads = args.threads or physical_cores()
    paths = _available_paths(args.only)
    calib = synth_calibration(workdir, args.calib_count)
    built = build_artifacts(paths, DEMO if DEMO.is_file() else None, workdir, calib, args.calib_count)
    frame = street_frame(*FRAME_HW, seed=0)[None]  # cpu_limit.py's frame
    results = []
    for (backend, precision), (artifact, _) in built.items():
        print(f"profiling {artifact.name}", file=sys.stderr)
        if backend == "openvino":
            times = profile_openvino(artifact, precision, frame, args.calls, threads, not args.no_bf16_mark)
        else:
            times = profile_onnxruntime(artifact, precision == "int8", frame, args.calls, threads, scratch)
        parts = {part: round(sum(v for (p, _, _), v in times.items() if p == part), 2) for part in (*PARTS, "model")}
        ops = [{"part": p, "op": op, "kernel": kernel, "ms": round(v, 2)}
               for (p, op, kernel), v in sorted(times.items(), key=lambda kv: -kv[1]) if p in PARTS and v >= 0.05]
        results.append({"backend": backend, "precision": precision, "parts_ms": parts, "ops": ops})
        print(f"{backend} {precision}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items()))
        for row in ops[:8]:
            print(f"    {row['part']:4s} {row['ms']:6.2f} ms  {row['op']} ({row['kernel']})")
    result = {"command": "python " + shlex.join(sys.argv), "source": source_commit(),
              "date": datetime.date.today().isoformat(), "machine": machine_info(), "threads": threads,
              "frame_size": f"{FRAME_HW[1]}x{FRAME_HW[0]}", "calls": args.calls, "bf16_mark": not args.no_bf16_mark,
              "results": results}
    out = write_result(args.out, f"prepost_profile_{cpu_features().label.lower().replace(' ', '-')}", result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
