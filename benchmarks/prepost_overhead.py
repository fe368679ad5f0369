"""What the in-graph pre/post-processing costs against the model alone, and whether it depends on the frame.

Times, interleaved in rounds in one process, for each CPU backend (ONNX Runtime, OpenVINO FP32):
  model/smooth        plain graph, float 1 x 3 x 512 x 1024 input: the smooth frame as the pipeline
                      pre-processes it (`pipeline.preprocess`) -> logits (the denominator)
  model/noise         the same on the noise frame (the model alone is slower on smooth frames: CPU
                      arithmetic on tiny activations, so each frame is compared with its own model time)
  <form>/smooth       the pipeline graph in one post-processing form (`PostForm`), uint8 2048 x 1024
                      street-like frame -> uint8 labels at 2048 x 1024
  <form>/noise        the same graph on a uniform-noise frame (class boundaries everywhere)
ONNX Runtime runs both forms (its builder ships `separable`), OpenVINO the `resize` form its builder
ships. Weights are deterministic random ones (seeded BiSeNetV2 init) unless --weights is given. Writes
benchmarks/results/prepost_<date>.json; the bars are pre/post <= 15 % over model-only on both frames
(goal <= 10 %) and noise <= 1.10x smooth.

    python benchmarks/prepost_overhead.py [--weights CKPT] [--rounds 12] [--per-round 2] [--backends onnxruntime openvino]
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: backend -> the post-processing forms timed on it.
FORMS = {"onnxruntime": ("resize", "separable"), "openvino": ("resize",)}


def _model(weights: str | None, seed: int) -> tuple[Any, str]:
    import torch

    from bisenet_rt.model import BiSeNetV2, load_checkpoint, file_sha256

    if weights:
        return load_checkpoint(weights), file_sha256(weights)
    torch.manual_seed(seed)
    return BiSeNetV2(19, aux_heads=False).eval(), f"random-init (torch.manual_seed({seed}))"


def _callables(backend: str, plain: Path, pipes: dict[str, Path], frames: dict[str, np.ndarray],
               inputs: dict[str, np.ndarray]) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """run name -> a zero-argument call, and the runtime's versions, for one backend."""
    if backend == "onnxruntime":
        import onnxruntime as ort

        from bisenet_rt.backends.onnxruntime.run import OnnxRuntimeBackend, session_options

        model = ort.InferenceSession(str(plain), session_options(), providers=["CPUExecutionProvider"])
        runners = {form: OnnxRuntimeBackend(pipes[form], device="cpu") for form in FORMS[backend]}
        run_model = lambda x: model.run(None, {"input": x})  # noqa: E731
    else:
        import openvino as ov

        from bisenet_rt.host import physical_cores
        from bisenet_rt.backends.openvino.run import OpenVINOBackend

        compiled = ov.Core().compile_model(str(plain), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                                "PERFORMANCE_HINT": "LATENCY",
                                                                "INFERENCE_NUM_THREADS": physical_cores()})
        request = compiled.create_infer_request()
        runners = {form: OpenVINOBackend(pipes[form], precision="fp32", cache_dir=None) for form in FORMS[backend]}
        run_model = lambda x: request.infer({0: x})  # noqa: E731
    calls: dict[str, Callable[[], Any]] = {f"model/{kind}": lambda x=x: run_model(x) for kind, x in inputs.items()}
    for form, runner in runners.items():
        for kind, frame in frames.items():
            calls[f"{form}/{kind}"] = lambda r=runner, f=frame: r.infer(f)
    return calls, next(iter(runners.values())).versions()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--weights", help="checkpoint (default: deterministic random weights)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the random weights")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--per-round", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino"],
                        choices=["onnxruntime", "openvino"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    import torch

    from bisenet_rt.apps.bench import latency_stats, machine_info
    from bisenet_rt.graph.export import ExportConfig, PostForm, export_onnx
    from bisenet_rt.model.reference import preprocess
    from bisenet_rt.samples import street_frame

    model, weights = _model(args.weights, args.seed)
    smooth = street_frame(1024, 2048, seed=0)[None]
    frames = {"smooth": smooth, "noise": np.random.default_rng(0).integers(0, 256, smooth.shape, dtype=np.uint8)}
    inputs = {kind: preprocess(torch.from_numpy(frame)).numpy() for kind, frame in frames.items()}
    calls: dict[str, dict[str, Callable[[], Any]]] = {}
    versions: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="bisenet_rt_prepost_") as tmp:
        plain = Path(tmp) / "plain.onnx"
        export_onnx(model, plain, ExportConfig(plain=True))
        pipes = {form.value: Path(tmp) / f"pipeline_{form.value}.onnx" for form in PostForm}
        for form, path in pipes.items():
            export_onnx(model, path, ExportConfig(post=form))
        for backend in args.backends:
            calls[backend], versions[backend] = _callables(backend, plain, pipes, frames, inputs)
        times: dict[str, dict[str, list[float]]] = {b: {r: [] for r in c} for b, c in calls.items()}
        for backend_calls in calls.values():
            for call in backend_calls.values():
                call()
        for _ in range(args.rounds):
            for backend, backend_calls in calls.items():
                for name, call in backend_calls.items():
                    for _ in range(args.per_round):
                        t0 = time.perf_counter()
                        call()
                        times[backend][name].append((time.perf_counter() - t0) * 1e3)
    results: dict[str, Any] = {}
    for backend, runs in times.items():
        stats = {name: latency_stats(v) for name, v in runs.items()}
        p50 = {name: s["p50"] for name, s in stats.items()}
        forms = {}
        for form in FORMS[backend]:
            forms[form] = {"prepost_over_model_p50": {k: round(p50[f"{form}/{k}"] / p50[f"model/{k}"] - 1.0, 4)
                                                      for k in frames},
                           "noise_over_smooth_p50": round(p50[f"{form}/noise"] / p50[f"{form}/smooth"], 4)}
        results[backend] = {"versions": versions[backend], "latency_ms": stats, "forms": forms}
    result = {
        "command": "python " + shlex.join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "weights": weights, "frame_size": "2048x1024", "model_size": "1024x512",
        "frames": {"smooth": "bisenet_rt.samples.street_frame(1024, 2048, seed=0)",
                   "noise": "numpy.random.default_rng(0).integers(0, 256, (1, 1024, 2048, 3), uint8)"},
        "rounds": args.rounds, "per_round": args.per_round, "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"prepost_{datetime.date.today().isoformat()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    for backend, r in results.items():
        lat = r["latency_ms"]
        print(f"{backend}: model alone p50 {lat['model/smooth']['p50']:.1f} ms (smooth), "
              f"{lat['model/noise']['p50']:.1f} ms (noise)")
        for form, f in r["forms"].items():
            over = f["prepost_over_model_p50"]
            print(f"  {form:10s} smooth {lat[f'{form}/smooth']['p50']:7.1f} ms ({over['smooth']:+.1%})  "
                  f"noise {lat[f'{form}/noise']['p50']:7.1f} ms ({over['noise']:+.1%})  "
                  f"noise/smooth {f['noise_over_smooth_p50']:.3f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
