"""Video throughput of `bisenet-rt segment` against `bench`-style Segmenter calls, same artifact and frame size.

Generates street-like frames (default 40 frames of 2048x1024) as MPEG-4 clips of `--chunk` frames,
then alternates, on one process and one Segmenter, in pairs close in time (the machine is shared,
so its load drifts; a pair sees about the same load):
  bench   the Segmenter called on one host frame `--chunk` times (bisenet_rt.apps.bench.run_bench, the `bench` protocol)
  video   bisenet_rt.apps.video.segment_video on one clip: decode, inference and overlay+FPS+encode overlapped
and writes benchmarks/results/video_<date>[_<n>].json. The issue's bar: video within 15% of bench.

    python benchmarks/video_throughput.py [--engine PATH] [--frames 40] [--chunk 10] [--size 2048x1024] [--repeats 2]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

from results_file import write_result


def make_clip(path: Path, seeds: range, size: tuple[int, int]) -> Path:
    """Write one street-like frame per seed as an MPEG-4 clip."""
    import cv2

    from bisenet_rt.samples import street_frame

    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
    for seed in seeds:
        writer.write(street_frame(h, w, seed=seed))
    writer.release()
    return path


def default_artifact(work: Path, weights: str | None) -> Path:
    """The newest artifact under engines/, else the CPU default `bisenet-rt build` makes (in `work`)."""
    from bisenet_rt.builder import BuildConfig, build
    from bisenet_rt.artifacts import newest_artifact

    found = newest_artifact()
    if found is not None:
        return found
    return build(BuildConfig(backend="onnxruntime", engines_dir=work, weights=Path(weights) if weights else None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--engine", type=Path, help="artifact (default: newest under engines/, else build one)")
    parser.add_argument("--weights", help="checkpoint for the artifact built when there is none (default random)")
    parser.add_argument("--frames", type=int, default=40, help="distinct frames per repeat (default 40)")
    parser.add_argument("--chunk", type=int, default=10, help="frames per bench/video pair (default 10)")
    parser.add_argument("--size", default="2048x1024", help="frame size WxH (default 2048x1024)")
    parser.add_argument("--repeats", type=int, default=2, help="passes over all clips (default 2)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed Segmenter calls first (default 3)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    import cv2
    import numpy as np

    import bisenet_rt
    from bisenet_rt import Segmenter
    from bisenet_rt.apps.bench import BenchConfig, machine_info, run_bench
    from bisenet_rt.sizes import parse_size
    from bisenet_rt.apps.video import segment_video

    size = parse_size(args.size)
    if args.chunk < 1 or args.frames < args.chunk or args.repeats < 1:
        parser.error("need --repeats >= 1 and 1 <= --chunk <= --frames")
    with tempfile.TemporaryDirectory(prefix="video_bench_") as tmp:
        work = Path(tmp)
        artifact = args.engine or default_artifact(work, args.weights)
        built_here = work in Path(artifact).parents
        clips = [make_clip(work / f"clip{i}.mp4", range(start, start + args.chunk), size)
                 for i, start in enumerate(range(0, args.frames - args.chunk + 1, args.chunk))]
        print(f"artifact {artifact}; {len(clips)} clips of {args.chunk} frames {size[0]}x{size[1]}", file=sys.stderr)
        pairs = []
        bench_s = video_s = 0.0
        frames_done = 0
        with Segmenter(artifact) as seg:
            run_bench([seg], BenchConfig(iters=1, warmup=args.warmup, size=size, rounds=1), progress=False)
            config = BenchConfig(iters=args.chunk, warmup=0, size=size, rounds=1)
            for rep in range(args.repeats):
                for i, clip in enumerate(clips):
                    (result,) = run_bench([seg], config, progress=False)
                    b_seconds = sum(result.latencies_ms) / 1000.0
                    stats = segment_video(seg, clip, work / "out.mp4", progress=False)
                    if stats.frames != args.chunk or stats.ended_early:
                        raise RuntimeError(f"video pass wrote {stats.frames}/{args.chunk} frames: {stats.summary()}")
                    bench_s, video_s, frames_done = bench_s + b_seconds, video_s + stats.seconds, frames_done + args.chunk
                    pair = {"repeat": rep, "clip": i, "bench_fps": round(args.chunk / b_seconds, 3),
                            "video_fps": round(stats.fps, 3), "load_average_1min": round(os.getloadavg()[0], 2)}
                    pair["video_over_bench"] = round(pair["video_fps"] / pair["bench_fps"], 3)
                    pairs.append(pair)
                    print(f"pair {len(pairs)}: bench {pair['bench_fps']:.3f}, video {pair['video_fps']:.3f} frames/s "
                          f"(x{pair['video_over_bench']:.3f}, load {pair['load_average_1min']})", file=sys.stderr)
            device, backend, versions = seg.device, seg.backend, seg.backend.versions()
            precision = seg.precision.value
        sidecar = Path(str(artifact) + ".json")
        weights = json.loads(sidecar.read_text())["info"].get("source_sha256") if sidecar.is_file() else None

    bench_mean, video_mean = frames_done / bench_s, frames_done / video_s
    ratio = video_mean / bench_mean
    median_ratio = statistics.median(p["video_over_bench"] for p in pairs)
    report = {
        "command": "python " + shlex.join([os.path.relpath(__file__), *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "versions": {"bisenet_rt": bisenet_rt.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
                     **versions},
        "artifact": {"path": str(artifact), "backend": backend, "precision": precision, "device": device,
                     "source_sha256": weights,
                     "origin": "built by this script ('bisenet-rt build --backend onnxruntime') in a temporary folder"
                     if built_here else "given or found under engines/"},
        "config": {"frames": args.frames, "chunk": args.chunk, "size": f"{size[0]}x{size[1]}",
                   "repeats": args.repeats, "warmup": args.warmup, "codec": "mp4v", "overlay_alpha": 0.5,
                   "fps_counter": True, "clips": "bisenet_rt.samples.street_frame(h, w, seed=i), i = 0..frames-1",
                   "bench_protocol": "bisenet_rt.apps.bench.run_bench: one host frame, Segmenter call timed per frame"},
        "pairs": pairs,
        "bench_fps": round(bench_mean, 3),
        "video_fps": round(video_mean, 3),
        "video_over_bench": round(ratio, 3),
        "video_over_bench_median_pair": round(median_ratio, 3),
        "target": "video within 15% of bench (video_over_bench >= 0.85)",
        "meets_target": ratio >= 0.85,
    }
    path = write_result(args.out, "video", report)
    print(f"bench {bench_mean:.3f} frames/s, video {video_mean:.3f} frames/s: video/bench = {ratio:.3f} (median pair "
          f"{median_ratio:.3f}; {'meets' if ratio >= 0.85 else 'misses'} the 0.85 bar); wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
