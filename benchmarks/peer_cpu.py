"""CPU peer comparison: our Segmenter against PyTorch and a hand-wired OpenVINO pipeline, end to end.

Every entry takes the same host 2048 x 1024 BGR uint8 frame and returns a host 2048 x 1024 label map;
all run in one process, interleaved in rounds, so they share the machine's state:

  ours  openvino fp32   Segmenter on the pipeline ONNX, OpenVINO with the f32 hint (true FP32)
  ours  openvino bf16   the same with the bf16 hint (only where the CPU computes BF16)
  ours  onnxruntime     Segmenter on the pipeline ONNX, ONNX Runtime FP32
  torch eager           Segmenter over the checkpoint: the PyTorch reference pipeline
  torch.compile         the same model through torch.compile (with --compile; compiling takes minutes)
  hand-wired openvino   written the way a user would: cv2.resize to 1024 x 512, numpy normalize, OpenVINO
                        at its defaults on the `--plain` export, cv2.resize of the 19 logit channels back
                        to 2048 x 1024, numpy arg-max

Writes benchmarks/results/peer_cpu_<date>[_<n>].json (numbered, never overwriting) and prints a markdown table.

    python benchmarks/peer_cpu.py [--weights CKPT] [--rounds 10] [--compile]
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
from results_file import write_result

EAGER = "torch eager"
PEER = "hand-wired openvino"


def hand_wired_openvino(plain_onnx: Path, frame_hw: tuple[int, int], model_size: tuple[int, int]) -> Callable:
    """What a user wires by hand around OpenVINO: OpenCV resizes, numpy normalize and arg-max, OpenVINO defaults."""
    import cv2
    import openvino as ov

    from bisenet_rt.classes import MEAN_RGB, STD_RGB

    compiled = ov.Core().compile_model(str(plain_onnx), "CPU")
    request = compiled.create_infer_request()
    mean = np.float32(MEAN_RGB)
    std = np.float32(STD_RGB)
    h, w = frame_hw

    def run(frame: np.ndarray) -> np.ndarray:
        small = cv2.resize(frame, model_size, interpolation=cv2.INTER_LINEAR)
        rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        x = ((rgb - mean) / std).transpose(2, 0, 1)[None]
        logits = request.infer({0: np.ascontiguousarray(x)})[0][0]
        up = cv2.resize(np.ascontiguousarray(logits.transpose(1, 2, 0)), (w, h), interpolation=cv2.INTER_LINEAR)
        return up.argmax(axis=2).astype(np.uint8)

    precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    run.device = f"OpenVINO defaults (it chose INFERENCE_PRECISION_HINT={precision})"
    return run


def segmenter_entry(seg: Any) -> Callable:
    def run(frame: np.ndarray) -> np.ndarray:
        return seg(frame)

    run.device = seg.device
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--weights", help="checkpoint (default: the demo model if present, else random weights)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds, one frame per entry each")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per entry first")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (compiling takes minutes)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    import cv2
    import onnxruntime as ort
    import openvino as ov
    import torch
    from tqdm import tqdm

    from bisenet_rt import Segmenter
    from bisenet_rt.host import physical_cores
    from bisenet_rt.backends.openvino.run import openvino_version, supports_bf16
    from bisenet_rt.apps.bench import latency_stats, machine_info
    from bisenet_rt.classes import DEFAULT_MODEL_SIZE
    from bisenet_rt.graph.export import ExportConfig, export_onnx
    from bisenet_rt.model import model_and_sha, save_checkpoint
    from bisenet_rt.samples import street_frame

    torch.set_num_threads(physical_cores())
    weights = args.weights
    demo = Path(__file__).resolve().parents[1] / "bisenet_rt" / "assets" / "demo_bisenetv2_synth.pth"
    if weights is None and demo.is_file():
        weights = str(demo)
    model, sha = model_and_sha(weights)
    frame = street_frame(1024, 2048, seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="peer_cpu_"))
    pipeline = tmp / "pipeline.onnx"
    plain = tmp / "plain.onnx"
    export_onnx(model, pipeline, ExportConfig(), source_sha256=sha)
    export_onnx(model, plain, ExportConfig(plain=True), source_sha256=sha)
    checkpoint = save_checkpoint(model, tmp / "model.pth")

    segmenters = {"ours: openvino fp32": Segmenter(pipeline, backend="openvino", precision="fp32", cache_dir=None)}
    if supports_bf16():
        segmenters["ours: openvino bf16"] = Segmenter(pipeline, backend="openvino", precision="bf16", cache_dir=None)
    segmenters["ours: onnxruntime fp32"] = Segmenter(pipeline, backend="onnxruntime", device="cpu")
    segmenters[EAGER] = Segmenter(checkpoint, backend="torch", device="cpu")
    entries = {name: segmenter_entry(seg) for name, seg in segmenters.items()}
    compile_seconds = None
    if args.compile:
        compiled_seg = Segmenter(checkpoint, backend="torch", device="cpu", compile=True)
        started = time.perf_counter()
        compiled_seg(frame)
        compile_seconds = round(time.perf_counter() - started, 1)
        entries["torch.compile"] = segmenter_entry(compiled_seg)
    entries[PEER] = hand_wired_openvino(plain, frame.shape[:2], DEFAULT_MODEL_SIZE)

    load_before = os.getloadavg()
    reference = entries["ours: openvino fp32"](frame)
    agreement = {}
    for name, run in entries.items():
        for _ in range(args.warmup):
            labels = run(frame)
        agreement[name] = round(float((labels == reference).mean()), 5)
    times: dict[str, list[float]] = {name: [] for name in entries}
    for _ in tqdm(range(args.rounds), desc="rounds", file=sys.stderr):
        for name, run in entries.items():
            started = time.perf_counter()
            run(frame)
            times[name].append((time.perf_counter() - started) * 1e3)

    load_after = os.getloadavg()
    stats = {name: latency_stats(t) for name, t in times.items()}
    results = {}
    for name, s in stats.items():
        results[name] = {
            "device": entries[name].device, "latency_ms": s, "fps": round(1000.0 / s["p50"], 2),
            "speedup_vs_torch_eager": round(stats[EAGER]["p50"] / s["p50"], 2),
            "speedup_vs_hand_wired_openvino": round(stats[PEER]["p50"] / s["p50"], 2),
            "label_agreement_with_ours_openvino_fp32": agreement[name],
        }
    report = {
        "command": "python " + shlex.join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine_info(),
                    "openvino_capabilities": list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))},
        "versions": {"openvino": openvino_version(), "onnxruntime": ort.__version__, "torch": torch.__version__,
                     "numpy": np.__version__, "opencv": cv2.__version__},
        "weights": weights or "random-init", "weights_sha256": sha,
        "frame": "bisenet_rt.samples.street_frame(1024, 2048, seed=0), 2048x1024 BGR uint8 -> 2048x1024 uint8 labels",
        "load_average_1_5_15min": {"before": [round(v, 2) for v in load_before],
                                   "after": [round(v, 2) for v in load_after]},
        "rounds": args.rounds, "torch_threads": torch.get_num_threads(), "torch_compile_seconds": compile_seconds,
        "speedup_basis": "p50 latency ratio", "results": results,
    }
    path = write_result(args.out, "peer_cpu", report)
    print(format_table(report))
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


def format_table(report: dict[str, Any]) -> str:
    """The report as a markdown table, with the machine and command under it."""
    lines = ["| entry | p50 ms | p90 ms | FPS | vs torch eager | vs hand-wired OpenVINO | labels = ours FP32 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in report["results"].items():
        lines.append(f"| {name} | {r['latency_ms']['p50']:.1f} | {r['latency_ms']['p90']:.1f} | {r['fps']:.2f} | "
                     f"{r['speedup_vs_torch_eager']:.2f}x | {r['speedup_vs_hand_wired_openvino']:.2f}x | "
                     f"{r['label_agreement_with_ours_openvino_fp32']:.2%} |")
    m = report["machine"]
    load = report["load_average_1_5_15min"]
    lines.append(f"\n{m['cpu']}, {m['physical_cores']} cores ({', '.join(m['cpu_flags'])}); "
                 f"{report['weights']}; {report['rounds']} rounds; 1-min load average {load['before'][0]} before, "
                 f"{load['after'][0]} after; `{report['command']}`")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
