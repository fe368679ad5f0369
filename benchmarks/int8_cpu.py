"""INT8 (Q/DQ) against FP32 on ONNX Runtime (CPU): end-to-end speed at 2048x1024 and accuracy.

Builds the FP32 pipeline graph and the INT8 Q/DQ pipeline graph (calibrated on the synthetic train
split through bisenet_rt.graph.qdq) from the same weights, then
  speed     both Segmenters on the same 2048x1024 frame, interleaved rounds (bisenet_rt.apps.bench.run_bench):
            the paper's protocol, resize and arg-max inside the timed call;
  kernels   which convolutions ONNX Runtime runs as int8 QLinearConv, and a per-op-type profile;
  accuracy  mIoU of each artifact on the synthetic val split and the share of pixels INT8 labels as
            FP32 does (bisenet_rt.apps.evaluate), for every calibration method asked for.
Both graphs use the post-processing layout the ONNX Runtime builder ships (its backend spec's graph form). The INT8
weight grid is the one `bisenet-rt build` picks for this CPU (8-bit with VNNI/AMX, 7-bit on AVX2
without it: `bisenet_rt.builder.choice.int8_weights`); `--grids int8,int7` scores both, the first timed.
Writes benchmarks/results/int8_<cpu class>_<date>[_<n>].json with the CPU's class and flags. Goals (issues 5
and 14, on every CPU class): INT8 >= 1.5x FP32 FPS, mIoU within 1.0, >= 99% of pixels agreeing. Without
the demo model (or --weights) the weights are random: speed only.

    python benchmarks/int8_cpu.py [--weights CKPT] [--data data/synth] [--calib-count 200]
        [--methods minmax,percentile] [--grids auto|int8,int7] [--iters 60] [--rounds 6] [--eval-limit N]
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results_file import write_result

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "bisenet_rt" / "assets" / "demo_bisenetv2_synth.pth"


def op_profile(path: Path, frame: Any, runs: int) -> dict[str, float]:
    """Milliseconds per frame in each op type (ONNX Runtime's profiler; session set up as the backend does)."""
    import onnx
    import onnxruntime as ort

    from bisenet_rt.backends.onnxruntime.run import QDQ_DISABLED_OPTIMIZERS, session_options
    from bisenet_rt.artifacts import read_metadata

    int8 = read_metadata(onnx.load(str(path), load_external_data=False)).get("precision") == "int8"
    so = session_options()
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.gettempdir()) / f"bisenet_int8_profile_{path.stem}")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(QDQ_DISABLED_OPTIMIZERS) if int8 else None)
    for _ in range(runs + 1):
        sess.run(None, {"frames": frame})
    trace = Path(sess.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    first_run = min((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                    key=lambda e: e["ts"])
    warm_from = first_run["ts"] + first_run["dur"]  # the first run allocates; leave it out
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= warm_from:
            per_op[e["args"]["op_name"]] += e["dur"]
    return {op: round(us / runs / 1000, 2) for op, us in per_op.most_common()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--weights", type=Path, help="checkpoint (default: the demo model if present, else random)")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "synth",
                        help="synthetic dataset root (bisenet-rt synth -o data/synth --n 400)")
    parser.add_argument("--calib-count", type=int, default=200)
    parser.add_argument("--methods", default="minmax", help="calibration methods to compare, comma-separated; "
                        "the first is timed")
    parser.add_argument("--grids", default="auto", help="INT8 weight grids to build, comma-separated (int8, int7; "
                        "auto: the one the build picks for this CPU); the first is timed")
    parser.add_argument("--iters", type=int, default=60, help="timed calls per artifact")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--eval-limit", type=int, help="evaluate on the first N val frames only")
    parser.add_argument("--work", type=Path, default=REPO / "engines" / "int8_bench",
                        help="where the graphs and the calibration cache go (default engines/int8_bench)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    from bisenet_rt import Segmenter
    from bisenet_rt.apps.bench import BenchConfig, format_table, machine_info, report, run_bench
    from bisenet_rt.backends.onnxruntime.build import ort_kernel_counts
    from bisenet_rt.data import open_dataset
    from bisenet_rt.apps.evaluate import evaluate
    from bisenet_rt.apps.evaluate import format_table as eval_table
    from bisenet_rt.graph.export import ExportConfig, export_onnx
    from bisenet_rt.model import model_and_sha
    from bisenet_rt.builder.choice import host_facts, int8_weights
    from bisenet_rt.backends import SPECS
    from bisenet_rt.precision import Precision
    from bisenet_rt.int8_grid import WeightRange
    from bisenet_rt.graph.calibration import calibration_files
    from bisenet_rt.graph.qdq import quantize_graph
    from bisenet_rt.samples import street_frame

    torch.set_num_threads(2)
    weights = args.weights or (DEMO if DEMO.is_file() else None)
    model, sha = model_and_sha(weights)
    trained = weights is not None
    auto_grid, auto_target = int8_weights(host_facts(), "onnxruntime")
    grids = [auto_grid if g.strip() == "auto" else WeightRange(g.strip()) for g in args.grids.split(",") if g.strip()]
    variants = [f"{m.strip()}/{g.value}" for m in args.methods.split(",") if m.strip() for g in grids]
    args.work.mkdir(parents=True, exist_ok=True)

    fp32_path = args.work / "fp32.onnx"
    post = SPECS["onnxruntime"].graph_form(Precision.FP32).post
    export_onnx(model, fp32_path, ExportConfig(post=post), source_sha256=sha)
    plain = export_onnx(model, None, ExportConfig(plain=True), source_sha256=sha)
    calib = calibration_files(args.data / "leftImg8bit" / "train", args.calib_count)
    int8_paths, calibration = {}, {}
    for variant in variants:
        method, grid = variant.split("/")
        started = time.perf_counter()
        proto = quantize_graph(plain, calib, cache_dir=args.work / "calibration", method=method,
                               post=post, weights=WeightRange(grid),
                               target=auto_target if WeightRange(grid) is auto_grid else "(compared here)")
        int8_paths[variant] = args.work / f"int8_{method}_{grid}.onnx"
        onnx.save(proto, str(int8_paths[variant]))
        calibration[variant] = {"seconds_incl_cache_reuse": round(time.perf_counter() - started, 1),
                                **json.loads({p.key: p.value for p in proto.metadata_props}["bisenet_rt.quantization"])}
        print(f"{variant}: wrote {int8_paths[variant]}", file=sys.stderr)
    methods = variants
    timed = int8_paths[methods[0]]

    kernels = {"fp32": ort_kernel_counts(fp32_path), "int8": ort_kernel_counts(timed)}
    frame = street_frame(1024, 2048, seed=0)[None]
    profile = {"fp32": op_profile(fp32_path, frame, 3), "int8": op_profile(timed, frame, 3)}

    config = BenchConfig(iters=args.iters, warmup=args.warmup, size=(2048, 1024), rounds=args.rounds)
    with Segmenter(fp32_path) as fp32, Segmenter(timed) as int8:
        speed = report(run_bench([fp32, int8], config), config, ["(benchmarks/int8_cpu.py)"])
    speedup = speed["results"][1]["fps"] / speed["results"][0]["fps"]
    print(format_table(speed))

    accuracy = None
    if trained:
        dataset = open_dataset(args.data, "val")
        segs = [Segmenter(fp32_path)] + [Segmenter(int8_paths[m]) for m in methods]
        try:
            results = evaluate(segs, dataset, limit=args.eval_limit)
        finally:
            for seg in segs:
                seg.close()
        print(eval_table(results))
        base = results[0].scores.miou
        accuracy = {"dataset": str(args.data), "split": "val", "frames": results[0].scores.frames,
                    "fp32_miou": base,
                    "int8": {m: {"miou": r.scores.miou, "miou_drop_points": round(100 * (base - r.scores.miou), 3),
                                 "pixels_agreeing_with_fp32": r.agreement, "per_class_iou": r.scores.to_json()["iou"]}
                             for m, r in zip(methods, results[1:])}}
    timed_acc = accuracy["int8"][methods[0]] if accuracy else None
    goals = {"speedup_vs_fp32": round(speedup, 3), "speedup_goal": 1.5, "speedup_met": speedup >= 1.5,
             "miou_drop_points": timed_acc["miou_drop_points"] if timed_acc else None, "miou_goal_points": 1.0,
             "agreement": timed_acc["pixels_agreeing_with_fp32"] if timed_acc else None, "agreement_goal": 0.99}
    result = {
        "command": "python " + shlex.join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "torch": torch.__version__,
                     "numpy": np.__version__},
        "weights": str(weights) if weights else "random-init (speed only: accuracy is meaningless)",
        "weights_sha256": sha,
        "int8_grid_for_this_cpu": {"weights": auto_grid.value, "target": auto_target},
        "calibration": calibration, "timed_int8": methods[0],
        "cpu_conv_kernels": kernels, "op_profile_ms_per_frame": profile,
        "speed": speed, "accuracy": accuracy, "goals": goals,
    }
    cpu_class = result["machine"]["cpu_class"].lower().replace(" ", "-")
    path = write_result(args.out, f"int8_{cpu_class}", result)
    print(json.dumps(goals))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
