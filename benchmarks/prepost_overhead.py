"""What the in-graph pre/post-processing costs against the model alone, per post-processing form and CPU backend.

Times, interleaved in rounds in one process, for each CPU backend (ONNX Runtime FP32, OpenVINO FP32, and
OpenVINO BF16 where the CPU computes BF16):
  model/smooth        the model cut out of the pipeline graph (`cpu_limit.model_alone_graph`): the smooth
                      frame as the pipeline pre-processes it (`pipeline.preprocess`), 1 x 3 x 512 x 1024 ->
                      the coarse logits the post-processing starts from, in the same runtime and settings
                      (the denominator; the model's x8 logit upsample belongs to the post-processing)
  model/noise         the same on the noise frame (each frame is compared with its own model time)
  <form>/smooth       the pipeline graph in one post-processing form (`PostForm`), uint8 2048 x 1024
                      street-like frame -> uint8 labels at 2048 x 1024, through the backend Segmenter uses
  <form>/noise        the same graph on a uniform-noise frame (class boundaries everywhere)
  post/<form>/<frame> the form's post-processing alone (`prepost.part_graph`), fed that frame's coarse logits:
                      its cost without the model around it, short calls that a busy machine disturbs less
Every form runs on every backend, so the table says which is fastest where (each backend spec's `graph_forms` is the
choice the builds make). Weights are deterministic random ones (seeded BiSeNetV2 init) unless --weights is
given. Minimum over the rounds of the wall clock, or with --threads 1 --clock cpu of this process's CPU time per
call (the work itself, which other jobs on a shared machine do not stretch). Writes
benchmarks/results/prepost_<cpu class>_<date>[_<n>].json; the bars are pre/post <= 15 % over the model
alone on both frames (goal <= 10 %) and noise <= 1.10x smooth.

    python benchmarks/prepost_overhead.py [--weights CKPT] [--rounds 12] [--per-round 2]
        [--backends onnxruntime openvino openvino-bf16] [--threads N] [--clock wall|cpu]
"""
from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cpu_limit import model_alone_graph, ort_runner, ov_runner
from results_file import write_result

#: backend option -> (Segmenter backend, precision).
BACKENDS = {"onnxruntime": ("onnxruntime", "fp32"), "openvino": ("openvino", "fp32"),
            "openvino-bf16": ("openvino", "bf16")}


def built_form(option: tuple[str, str]) -> "Any":
    """The post-processing form `bisenet-rt build` gives this backend and precision (its spec's graph form)."""
    from bisenet_rt.backends import SPECS
    from bisenet_rt.precision import Precision

    backend, precision = option
    return SPECS[backend].graph_form(Precision(precision)).post


def _model(weights: str | None, seed: int) -> tuple[Any, str]:
    import torch

    from bisenet_rt.model import BiSeNetV2, model_and_sha

    if weights:
        return model_and_sha(weights)
    torch.manual_seed(seed)
    return BiSeNetV2(19, aux_heads=False).eval(), f"random-init (torch.manual_seed({seed}))"


def _callables(option: str, pipes: dict[str, Path], frames: dict[str, np.ndarray], inputs: dict[str, np.ndarray],
               threads: int) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """run name -> a zero-argument call, and the runtime's versions, for one backend."""
    from bisenet_rt.backends import open_backend

    import onnx

    from bisenet_rt.graph.prepost import part_graph

    backend, precision = BACKENDS[option]
    shape = next(iter(inputs.values())).shape
    alone, input_name = model_alone_graph(next(iter(pipes.values())), shape)

    def runner(proto: Any, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        if backend == "onnxruntime":
            return ort_runner(proto, feeds, False, threads)
        return ov_runner(proto, list(feeds.values()), precision, threads)

    calls: dict[str, Callable[[], Any]] = {}
    for kind, x in inputs.items():
        calls[f"model/{kind}"] = runner(alone, {input_name: x})
    coarse = {kind: ort_runner(alone, {input_name: x}, False, threads)()[0] for kind, x in inputs.items()}
    for form, path in pipes.items():
        post, names = part_graph(onnx.load(str(path)), "post")
        for kind, frame in frames.items():
            calls[f"post/{form}/{kind}"] = runner(post, dict(zip(names, (frame, coarse[kind]))))
    options: dict[str, Any] = {"threads": threads}
    if backend == "openvino":
        options.update(precision=precision, cache_dir=None)
    runners = {form: open_backend(path, backend, **options) for form, path in pipes.items()}
    for form, runner in runners.items():
        for kind, frame in frames.items():
            calls[f"{form}/{kind}"] = lambda r=runner, f=frame: r.infer(f)
    return calls, next(iter(runners.values())).versions()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="checkpoint (default: deterministic random weights)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the random weights")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--per-round", type=int, default=2)
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS),
                        help="default: every one this CPU runs (BF16 only where OpenVINO reports BF16)")
    parser.add_argument("--threads", type=int, help="compute threads of every runtime (default: the physical cores)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="what the comparison uses: wall-clock or (with --threads 1) CPU time per call")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1 (with more threads the CPU time counts spin-waiting)")

    import torch

    from bisenet_rt.backends.openvino.run import supports_bf16
    from bisenet_rt.apps.bench import latency_stats, machine_info
    from bisenet_rt.graph.export import ExportConfig, export_onnx
    from bisenet_rt.host import cpu_features, physical_cores
    from bisenet_rt.model.reference import preprocess
    from bisenet_rt.post_form import PostForm
    from bisenet_rt.samples import street_frame

    threads = args.threads or physical_cores()
    backends = args.backends or [b for b in BACKENDS if b != "openvino-bf16" or supports_bf16()]
    model, weights = _model(args.weights, args.seed)
    smooth = street_frame(1024, 2048, seed=0)[None]
    frames = {"smooth": smooth, "noise": np.random.default_rng(0).integers(0, 256, smooth.shape, dtype=np.uint8)}
    inputs = {kind: preprocess(torch.from_numpy(frame)).numpy() for kind, frame in frames.items()}
    load_before = os.getloadavg()
    calls: dict[str, dict[str, Callable[[], Any]]] = {}
    versions: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="bisenet_rt_prepost_") as tmp:
        pipes = {form.value: Path(tmp) / f"pipeline_{form.value}.onnx" for form in PostForm}
        for form, path in pipes.items():
            export_onnx(model, path, ExportConfig(post=form))
        for option in backends:
            calls[option], versions[option] = _callables(option, pipes, frames, inputs, threads)
        times: dict[str, dict[str, list[float]]] = {b: {r: [] for r in c} for b, c in calls.items()}
        cpu: dict[str, dict[str, list[float]]] = {b: {r: [] for r in c} for b, c in calls.items()}
        for backend_calls in calls.values():
            for call in backend_calls.values():
                call()
        for r in range(args.rounds):
            for option, backend_calls in calls.items():
                for name, call in backend_calls.items():
                    for _ in range(args.per_round):
                        t0, c0 = time.perf_counter(), time.process_time()
                        call()
                        times[option][name].append((time.perf_counter() - t0) * 1e3)
                        cpu[option][name].append((time.process_time() - c0) * 1e3)
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
    results: dict[str, Any] = {}
    clock = cpu if args.clock == "cpu" else times
    for option, runs in clock.items():
        stats = {name: latency_stats(v) for name, v in runs.items()}
        best = {name: s["min"] for name, s in stats.items()}
        forms = {}
        for form in PostForm:
            f = form.value
            forms[f] = {"prepost_over_model_min": {k: round(best[f"{f}/{k}"] / best[f"model/{k}"] - 1.0, 4)
                                                   for k in frames},
                        "prepost_ms_min": {k: round(best[f"{f}/{k}"] - best[f"model/{k}"], 2) for k in frames},
                        "noise_over_smooth_min": round(best[f"{f}/noise"] / best[f"{f}/smooth"], 4),
                        "post_alone_ms_min": {k: round(best[f"post/{f}/{k}"], 2) for k in frames}}
        fastest = min(PostForm, key=lambda form: sum(best[f"post/{form.value}/{k}"] for k in frames)).value
        results[option] = {"versions": versions[option], "latency_ms": stats, "forms": forms, "fastest": fastest,
                           "wall_ms_min": {name: round(min(v), 2) for name, v in times[option].items()},
                           "cpu_ms_min": {name: round(min(v), 2) for name, v in cpu[option].items()},
                           "built": built_form(BACKENDS[option]).value}
    result = {
        "command": "python " + shlex.join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "load_average": {"before": load_before, "after": os.getloadavg()},
        "weights": weights, "frame_size": "2048x1024", "model_size": "1024x512",
        "model_alone": "the model cut out of the pipeline graph: normalized input -> coarse logits (no x8 upsample)",
        "frames": {"smooth": "bisenet_rt.samples.street_frame(1024, 2048, seed=0)",
                   "noise": "numpy.random.default_rng(0).integers(0, 256, (1, 1024, 2048, 3), uint8)"},
        "statistic": f"minimum over the rounds, {args.clock} clock", "threads": threads, "rounds": args.rounds, "per_round": args.per_round, "results": results,
    }
    cpu_class = cpu_features().label.lower().replace(" ", "-")
    path = write_result(args.out, f"prepost_{cpu_class}", result)
    for option, r in results.items():
        lat = r["latency_ms"]
        print(f"{option}: model alone {lat['model/smooth']['min']:.1f} ms (smooth), {lat['model/noise']['min']:.1f} ms "
              f"(noise); fastest form: {r['fastest']}; builds use: {r['built']}")
        for form, f in r["forms"].items():
            over, ms = f["prepost_over_model_min"], f["prepost_ms_min"]
            print(f"  {form:13s} smooth {lat[f'{form}/smooth']['min']:7.1f} ms (+{ms['smooth']:.1f}, {over['smooth']:+.1%})"
                  f"  noise {lat[f'{form}/noise']['min']:7.1f} ms (+{ms['noise']:.1f}, {over['noise']:+.1%})"
                  f"  noise/smooth {f['noise_over_smooth_min']:.3f}  post alone {f['post_alone_ms_min']['smooth']:.1f} / "
                  f"{f['post_alone_ms_min']['noise']:.1f} ms")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
