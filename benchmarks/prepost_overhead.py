"""What the in-graph pre/post-processing costs on ONNX Runtime, against the model alone.

Times, interleaved in rounds on one process:
  model-only   plain graph, float 1 x 3 x 512 x 1024 normalized input -> logits (the denominator)
  pipeline     our graph, uint8 2048 x 1024 BGR frame -> uint8 labels at 2048 x 1024
  naive-post   plain graph + bilinear resize of the 19 logit channels to 2048 x 1024 + arg-max
and writes benchmarks/results/prepost_<date>.json.

    python benchmarks/prepost_overhead.py [--weights CKPT] [--rounds 15] [--per-round 2]
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def naive_post_graph(plain_bytes: bytes, frame_hw: tuple[int, int], num_classes: int) -> bytes:
    """The plain graph followed by a full-size bilinear upsample of the logits and an arg-max."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load_from_string(plain_bytes)
    g = proto.graph
    out = g.output[0].name
    g.initializer.append(numpy_helper.from_array(np.array([1, num_classes, *frame_hw], np.int64), "naive_sizes"))
    g.node.extend([
        helper.make_node("Resize", [out, "", "", "naive_sizes"], ["naive_up"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("ArgMax", ["naive_up"], ["naive_am"], axis=1, keepdims=0),
        helper.make_node("Cast", ["naive_am"], ["naive_labels"], to=onnx.TensorProto.UINT8),
    ])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("naive_labels", onnx.TensorProto.UINT8, None))
    return proto.SerializeToString()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="checkpoint (default: the demo model if present, else random)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from bisenet_rt.bench import latency_stats, machine_info
    from bisenet_rt.export import ExportConfig, export_onnx
    from bisenet_rt.model import model_and_sha
    from bisenet_rt.pipeline import preprocess
    from bisenet_rt.samples import street_frame
    from bisenet_rt.backends.onnxruntime import session_options

    weights = args.weights
    demo = Path(__file__).resolve().parents[1] / "bisenet_rt" / "assets" / "demo_bisenetv2_synth.pth"
    if weights is None and demo.is_file():
        weights = str(demo)
    model, sha = model_and_sha(weights)
    frame = street_frame(1024, 2048, seed=0)[None]
    import torch

    x = preprocess(torch.from_numpy(frame)).numpy()
    plain = export_onnx(model, None, ExportConfig(plain=True)).SerializeToString()
    pipe = export_onnx(model, None, ExportConfig()).SerializeToString()
    naive = naive_post_graph(plain, (1024, 2048), model.num_classes)
    runs = {
        "model-only": (ort.InferenceSession(plain, session_options(), providers=["CPUExecutionProvider"]), {"input": x}),
        "pipeline": (ort.InferenceSession(pipe, session_options(), providers=["CPUExecutionProvider"]), {"frames": frame}),
        "naive-post": (ort.InferenceSession(naive, session_options(), providers=["CPUExecutionProvider"]), {"input": x}),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for sess, feed in runs.values():
        sess.run(None, feed)
    for _ in range(args.rounds):
        for name, (sess, feed) in runs.items():
            for _ in range(args.per_round):
                t0 = time.perf_counter()
                sess.run(None, feed)
                times[name].append((time.perf_counter() - t0) * 1e3)
    stats = {k: latency_stats(v) for k, v in times.items()}
    base = stats["model-only"]["p50"]
    result = {
        "command": "python " + shlex.join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "versions": {"onnxruntime": ort.__version__},
        "weights": weights or "random-init", "weights_sha256": sha, "frame": "bisenet_rt.samples.street_frame(1024, 2048, seed=0)",
        "latency_ms": stats,
        "overhead_vs_model_only_p50": {k: round(v["p50"] / base - 1.0, 4) for k, v in stats.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"prepost_{datetime.date.today().isoformat()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in stats.items():
        print(f"{k:11s} p50 {v['p50']:8.1f} ms  mean {v['mean']:8.1f} ms  overhead {result['overhead_vs_model_only_p50'][k]:+.1%}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
