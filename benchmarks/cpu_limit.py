"""How close each CPU path runs to the hardware's limit: issue 26's table, for every backend and precision here.

Artifacts are built with `bisenet-rt build` (the `bisenet_rt.builder.build` it calls) from one checkpoint,
each with the post-processing form its backend gets (its spec's `graph_forms`): ONNX Runtime FP32
and INT8, OpenVINO FP32, BF16 (only where the CPU computes BF16) and INT8. INT8 is calibrated on
`bisenet-rt synth` frames (or --calib DIR). For each artifact, interleaved in rounds in one process:

  end to end     the backend (the interface Segmenter uses) on one uint8 2048 x 1024 BGR frame -> labels, with
                 its pre/post-processing where --prepost says (default: the backend's own choice, the CPU
                 kernels where numba is installed); --compare-graph also times the graph's own pre/post
  model alone    the model cut out of the same artifact's pipeline graph (normalized float input at the model
                 size -> the coarse logits the post-processing starts from; the x8 logit upsample belongs
                 to the post-processing), in the same runtime with the same settings (threads, precision
                 hint, ONNX Runtime's Q/DQ options)
  peak           a dense 3x3 convolution (256 -> 256 channels at 64 x 128, FLOPs known) in the same runtime at
                 the same precision; a format's practical peak is the fastest runtime's
  pre/post, glue end to end - model alone

Times are the minimum over the rounds of the wall clock, or with --clock cpu (one thread only) of this
process's CPU time per call: the work itself, which other jobs on a shared machine do not stretch (with more
threads the CPU time would count the runtimes' spin-waiting too). Both minima are recorded. Each call starts after
an idle pause (--pause-ms): ONNX Runtime's threads keep spinning for a while after its call and would take the
cores from the next runtime's call, which no single-runtime deployment sees. Writes
benchmarks/results/cpu_limit_<cpu class>[_cpuclock_<threads>t]_<date>[_<n>].json (numbered, never overwriting;
machine, CPU class and flags, versions, load average, command). The issue's bars: pre/post and glue <= 10 % of
the model alone (bar 15 %); end to end >= 80 % of the format's peak for FP32 and BF16.

    python benchmarks/cpu_limit.py [--weights CKPT] [--rounds 9] [--calib DIR] [--calib-count 32]
        [--workdir DIR] [--only onnxruntime/fp32 ...] [--threads N] [--clock wall|cpu] [--pause-ms 50]
        [--prepost auto|kernels|graph] [--compare-graph]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from results_file import write_result

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "bisenet_rt" / "assets" / "demo_bisenetv2_synth.pth"
FRAME_HW = (1024, 2048)
#: The peak kernel: N x C x H x W input of a 3x3, stride 1, pad 1 convolution with C -> C channels.
PEAK_CONV = (1, 256, 64, 128)
#: (backend, precision) pairs the table covers, in its order.
PATHS = (("openvino", "bf16"), ("openvino", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
         ("openvino", "int8"))
#: The number formats the peaks are measured in (a precision's format).
FORMAT = {"fp32": "FP32", "bf16": "BF16", "int8": "INT8"}


@dataclasses.dataclass
class Row:
    """One row of the table: the artifact and its three timed calls."""

    backend: str
    precision: str
    artifact: Path
    post: str
    calls: dict[str, Callable[[], Any]]
    times: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    cpu: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    wall: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)


def conv_flops(shape: tuple[int, int, int, int] = PEAK_CONV) -> float:
    n, c, h, w = shape
    return 2.0 * n * c * c * 9 * h * w


def peak_conv_graph(int8: bool) -> "Any":
    """The peak kernel as ONNX: a dense 3x3 conv; INT8 as the project's Q/DQ graphs write it (symmetric int8
    activations per tensor, int8 weights per output channel), which the runtimes fuse into int8 kernels."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n, c, h, w = PEAK_CONV
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.05, (c, c, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(np.zeros(c, np.float32), "bias")]
    nodes = []
    x, wname = "x", "w"
    if int8:
        w_scale = np.abs(weight).reshape(c, -1).max(1) / 127
        inits += [numpy_helper.from_array(np.round(weight / w_scale[:, None, None, None]).astype(np.int8), "w_q"),
                  numpy_helper.from_array(w_scale.astype(np.float32), "w_scale"),
                  numpy_helper.from_array(np.zeros(c, np.int8), "w_zero"),
                  numpy_helper.from_array(np.float32(4.0 / 127), "a_scale"),
                  numpy_helper.from_array(np.int8(0), "a_zero")]
        nodes += [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0, name="w_dq"),
                  helper.make_node("QuantizeLinear", ["x", "a_scale", "a_zero"], ["x_q"], name="x_q"),
                  helper.make_node("DequantizeLinear", ["x_q", "a_scale", "a_zero"], ["x_dq"], name="x_dq")]
        x = "x_dq"
    else:
        inits.append(numpy_helper.from_array(weight, "w"))
    conv_out = "y_float" if int8 else "y"
    nodes.append(helper.make_node("Conv", [x, wname, "bias"], [conv_out], pads=[1, 1, 1, 1], name="conv"))
    if int8:  # a quantized output, so ONNX Runtime fuses DQ -> Conv -> Q into QLinearConv
        nodes += [helper.make_node("QuantizeLinear", ["y_float", "a_scale", "a_zero"], ["y_q"], name="y_q"),
                  helper.make_node("DequantizeLinear", ["y_q", "a_scale", "a_zero"], ["y"], name="y_dq")]
    graph = helper.make_graph(nodes, "peak_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c, h, w])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def model_alone_graph(pipeline_onnx: Path, input_shape: tuple[int, ...]) -> tuple[Any, str]:
    """The model cut out of a pipeline graph (`prepost.part_graph`): its float input at the model size -> the
    coarse logits the post-processing reads; and the input's name."""
    import onnx

    from bisenet_rt.graph.prepost import part_graph

    model, (name,) = part_graph(onnx.load(str(pipeline_onnx)), "model", list(input_shape))
    return model, name


def ort_runner(proto: Any, feed: dict[str, np.ndarray], int8: bool, threads: int) -> Callable[[], Any]:
    """`proto` on ONNX Runtime's CPU provider, set up as the ONNX Runtime backend sets up its session."""
    import onnxruntime as ort

    from bisenet_rt.backends.onnxruntime.run import QDQ_DISABLED_OPTIMIZERS, session_options

    session = ort.InferenceSession(proto.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(QDQ_DISABLED_OPTIMIZERS) if int8 else None)
    return lambda: session.run(None, feed)


def ov_runner(proto: Any, feeds: list[np.ndarray], precision: str, threads: int) -> Callable[[], Any]:
    """`proto` compiled by OpenVINO's CPU plugin as the OpenVINO backend compiles (precision hint, latency, threads)."""
    import openvino as ov

    from bisenet_rt.backends.openvino.run import OV_PRECISION
    from bisenet_rt.backends.openvino.tune import tune_graph
    from bisenet_rt.precision import Precision

    core = ov.Core()
    model = core.read_model(proto.SerializeToString(), b"")
    tune_graph(model)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": OV_PRECISION[Precision(precision)],
                                                 "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    return lambda: request.infer(dict(enumerate(feeds)))


def source_commit() -> str | None:
    """The git commit of the bisenet_rt that ran ('+changes' when the package or the benchmark scripts in its
    checkout differ from it; recorded results do not count), or None."""
    import bisenet_rt

    folder = Path(bisenet_rt.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(folder.parent), "status", "--porcelain", "--untracked-files=no",
                                  "--", "bisenet_rt", "benchmarks/*.py"], capture_output=True, text=True,
                                 check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+changes" if changed else "")


def model_gflop(model: Any, model_size: tuple[int, int]) -> float:
    """FLOPs of the model at its input size (multiply and add counted apart), as torch.utils.flop_counter counts."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    w, h = model_size
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, h, w))
    return counter.get_total_flops() / 1e9


def synth_calibration(workdir: Path, count: int) -> Path:
    """`bisenet-rt synth` calibration frames in `workdir` (written once, reused after): their image folder."""
    from bisenet_rt.data.synth import write_dataset

    root = workdir / "synth"
    if not root.is_dir():
        write_dataset(root, n=count, seed=0, val_fraction=0.0, progress=False)
    return root / "leftImg8bit"


def build_artifacts(paths: list[tuple[str, str]], weights: Path | None, workdir: Path, calib: Path,
                    calib_count: int) -> dict[tuple[str, str], tuple[Path, list[str]]]:
    """`bisenet-rt build` for each (backend, precision), into `workdir` (an artifact already there is reused)."""
    from bisenet_rt.backends import BuildConfig
    from bisenet_rt.builder import build

    out = {}
    for backend, precision in paths:
        suffix = {"onnxruntime": ".onnx", "openvino": ".xml"}[backend]
        output = workdir / f"{backend}_{precision}{suffix}"
        argv = ["bisenet-rt", "build", "--backend", backend, "--precision", precision, "-o", str(output),
                "--engines-dir", str(workdir)]
        if weights is not None:
            argv += ["--weights", str(weights)]
        extra = {}
        if precision == "int8":
            argv += ["--calib", str(calib), "--calib-count", str(calib_count)]
            extra = {"calib": calib, "calib_count": calib_count}
        if not output.is_file():
            print(f"building {output.name}: {shlex.join(argv)}", file=sys.stderr)
            build(BuildConfig(precision=precision, backend=backend, weights=weights, output=output,
                              engines_dir=workdir, **extra))
        out[(backend, precision)] = (output, argv)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=DEMO if DEMO.is_file() else None,
                        help="checkpoint (default: the demo model bisenet_rt/assets/demo_bisenetv2_synth.pth)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calib", type=Path, help="INT8 calibration frames (default: 'bisenet-rt synth' frames "
                        "written into the work folder)")
    parser.add_argument("--calib-count", type=int, default=32)
    parser.add_argument("--workdir", type=Path, help="where artifacts are built and kept (default: a temporary "
                        "folder); artifacts already there are reused")
    parser.add_argument("--threads", type=int, help="compute threads of every runtime (default: the physical cores)")
    parser.add_argument("--pause-ms", type=float, default=50.0,
                        help="idle time before each timed call, so threads another runtime leaves spinning after its "
                             "call (ONNX Runtime's do) do not take the cores from the next call (default: 50)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="what the table is computed from: wall-clock or (with --threads 1) CPU time per call")
    parser.add_argument("--prepost", choices=["auto", "kernels", "graph"], default="auto",
                        help="where the backends do the pre/post-processing (their `prepost=`; default: auto)")
    parser.add_argument("--compare-graph", action="store_true",
                        help="also time each artifact end to end with the graph's own pre/post-processing")
    parser.add_argument("--only", nargs="+", metavar="BACKEND/PRECISION",
                        help="time only these paths, e.g. openvino/fp32 onnxruntime/int8")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1 (with more threads the CPU time counts spin-waiting)")

    with tempfile.TemporaryDirectory(prefix="bisenet_rt_cpu_limit_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        return run(args, workdir)


def _available_paths(only: list[str] | None) -> list[tuple[str, str]]:
    from bisenet_rt.backends.openvino.run import supports_bf16

    paths = [p for p in PATHS if p != ("openvino", "bf16") or supports_bf16()]
    if only:
        wanted = {tuple(o.split("/", 1)) for o in only}
        paths = [p for p in paths if p in wanted]
    return paths


def run(args: argparse.Namespace, workdir: Path) -> int:
    import torch

    from bisenet_rt.artifacts import read_sidecar
    from bisenet_rt.backends import open_backend
    from bisenet_rt.apps.bench import machine_info
    from bisenet_rt.host import cpu_features, physical_cores
    from bisenet_rt.model import model_and_sha
    from bisenet_rt.model.reference import preprocess
    from bisenet_rt.samples import street_frame

    load_before = os.getloadavg()
    threads = args.threads or physical_cores()
    paths = _available_paths(args.only)
    calib = args.calib
    if calib is None and any(p == "int8" for _, p in paths):
        calib = synth_calibration(workdir, args.calib_count)
    built = build_artifacts(paths, args.weights, workdir, calib, args.calib_count)
    model, weights_sha = model_and_sha(args.weights)
    gflop = model_gflop(model, (1024, 512))

    frame = street_frame(*FRAME_HW, seed=0)[None]
    model_input = preprocess(torch.from_numpy(frame)).numpy()
    peak_input = np.random.default_rng(1).normal(0, 1, PEAK_CONV).astype(np.float32)
    rows: list[Row] = []
    peaks: dict[tuple[str, str], Callable[[], Any]] = {}
    for backend, precision in paths:
        artifact, build_argv = built[(backend, precision)]
        sidecar = read_sidecar(artifact)
        source = Path(sidecar["onnx"])
        options: dict[str, Any] = {"threads": threads} if backend == "onnxruntime" else {"threads": threads,
                                                                                          "cache_dir": None}
        runner = open_backend(artifact, backend, prepost=args.prepost, **options)
        alone, input_name = model_alone_graph(source, model_input.shape)
        int8 = precision == "int8"
        if backend == "onnxruntime":
            model_call = ort_runner(alone, {input_name: model_input}, int8, threads)
            peaks[(backend, precision)] = ort_runner(peak_conv_graph(int8), {"x": peak_input}, int8, threads)
        else:
            model_call = ov_runner(alone, [model_input], precision, threads)
            peaks[(backend, precision)] = ov_runner(peak_conv_graph(int8), [peak_input], precision, threads)
        row = Row(backend, precision, artifact, _post_of(source),
                    {"end_to_end": lambda r=runner: r.infer(frame), "model_alone": model_call},
                    notes={"build": shlex.join(build_argv), "versions": runner.versions(), "device": runner.device,
                           "prepost": runner.prepost})
        if args.compare_graph:
            graph_runner = open_backend(artifact, backend, prepost="graph", **options)
            row.calls["end_to_end_graph_prepost"] = lambda r=graph_runner: r.infer(frame)
        rows.append(row)

    calls = [(row, name, call) for row in rows for name, call in row.calls.items()]
    calls += [(None, key, call) for key, call in peaks.items()]
    times: dict[int, list[float]] = {i: [] for i in range(len(calls))}
    cpu: dict[int, list[float]] = {i: [] for i in range(len(calls))}
    for _, _, call in calls:  # warm-up: first-call allocations and kernel selection
        call()
        call()
    for r in range(args.rounds):
        for i, (_, _, call) in enumerate(calls):
            time.sleep(args.pause_ms / 1e3)
            t0, c0 = time.perf_counter(), time.process_time()
            call()
            times[i].append((time.perf_counter() - t0) * 1e3)
            cpu[i].append((time.process_time() - c0) * 1e3)
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
    clock = cpu if args.clock == "cpu" else times
    best = {i: min(t) for i, t in clock.items()}
    peak_gflops = {key: conv_flops() / (best[i] * 1e-3) / 1e9 for i, (row, key, _) in enumerate(calls) if row is None}
    format_peak: dict[str, float] = {}
    for (backend, precision), value in peak_gflops.items():
        fmt = FORMAT[precision]
        format_peak[fmt] = max(format_peak.get(fmt, 0.0), value)

    results = []
    for i, (row, name, _) in enumerate(calls):
        if row is not None:
            row.times[name] = clock[i]
            row.cpu[name] = cpu[i]
            row.wall[name] = times[i]
    for row in rows:
        e2e, alone = min(row.times["end_to_end"]), min(row.times["model_alone"])
        peak = format_peak[FORMAT[row.precision]]
        results.append({
            "artifact": f"{'OpenVINO' if row.backend == 'openvino' else 'ONNX Runtime'} {row.precision.upper()}",
            "backend": row.backend, "precision": row.precision, "post_form": row.post,
            "end_to_end_ms": round(e2e, 2), "model_alone_ms": round(alone, 2),
            "prepost_glue_ms": round(e2e - alone, 2), "prepost_over_model": round((e2e - alone) / alone, 4),
            "model_pct_of_format_peak": round(gflop / (alone * 1e-3) / peak, 4),
            "end_to_end_pct_of_format_peak": round(gflop / (e2e * 1e-3) / peak, 4),
            "runtime_peak_gflops": round(peak_gflops[(row.backend, row.precision)], 1),
            "wall_ms": {k: [round(t, 2) for t in v] for k, v in row.wall.items()},
            "cpu_ms": {k: [round(t, 2) for t in v] for k, v in row.cpu.items()}, **row.notes,
        })
        if "end_to_end_graph_prepost" in row.times:
            graph_e2e = min(row.times["end_to_end_graph_prepost"])
            results[-1].update({"graph_prepost_end_to_end_ms": round(graph_e2e, 2),
                                "graph_prepost_over_model": round((graph_e2e - alone) / alone, 4)})
    machine = machine_info()
    result = {
        "command": "python " + shlex.join(sys.argv), "source": source_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "load_average": {"before": load_before, "after": os.getloadavg()},
        "weights": str(args.weights) if args.weights else "random-init", "weights_sha256": weights_sha,
        "frame_size": f"{FRAME_HW[1]}x{FRAME_HW[0]}", "model_size": "1024x512", "model_gflop": round(gflop, 2),
        "peak_kernel": f"3x3 conv, {PEAK_CONV[1]} -> {PEAK_CONV[1]} channels, {PEAK_CONV[2]}x{PEAK_CONV[3]}, "
                       f"batch {PEAK_CONV[0]} ({conv_flops() / 1e9:.2f} GFLOP)",
        "peak_gflops": {f"{b}/{p}": round(v, 1) for (b, p), v in peak_gflops.items()},
        "format_peak_gflops": {k: round(v, 1) for k, v in format_peak.items()},
        "rounds": args.rounds, "threads": threads, "clock": args.clock, "pause_ms": args.pause_ms,
        "prepost": args.prepost, "results": results,
    }
    cpu_class = cpu_features().label.lower().replace(" ", "-")
    clock = "" if args.clock == "wall" else f"_{args.clock}clock_{threads}t"
    out = write_result(args.out, f"cpu_limit_{cpu_class}{clock}", result)
    print(format_table(result))
    print(f"wrote {out}")
    return 0


def _post_of(source: Path) -> str:
    import onnx

    from bisenet_rt.artifacts import read_metadata

    return read_metadata(onnx.load(str(source), load_external_data=False)).get("post", "?")


def format_table(result: dict[str, Any]) -> str:
    """The issue's table, in markdown."""
    lines = [f"{result['machine']['cpu']} ({result['machine']['cpu_class']}), {result['threads']} thread(s), "
             f"{result['clock']} clock; {result['frame_size']} frames, model {result['model_size']} ({result['model_gflop']} GFLOP); "
             "format peaks (GFLOP/s): " + ", ".join(f"{k} {v}" for k, v in result["format_peak_gflops"].items()),
             "",
             "| artifact | pre/post | end to end | model alone (same runtime, tuned) | model at % of its format's peak "
             "| end to end at % of peak | pre/post and glue | graph's own pre/post: end to end |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        graph = (f"{r['graph_prepost_end_to_end_ms']:.1f} ms ({r['graph_prepost_over_model']:.0%})"
                 if "graph_prepost_end_to_end_ms" in r else "not timed")
        where = "CPU kernels" if r.get("prepost") == "kernels" else f"graph ({r['post_form']})"
        lines.append(f"| {r['artifact']} | {where} | {r['end_to_end_ms']:.1f} ms | {r['model_alone_ms']:.1f} ms "
                     f"| {r['model_pct_of_format_peak']:.0%} | {r['end_to_end_pct_of_format_peak']:.0%} "
                     f"| {r['prepost_glue_ms']:.1f} ms ({r['prepost_over_model']:.0%}) | {graph} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
