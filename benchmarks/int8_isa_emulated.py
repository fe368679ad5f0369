"""INT8 accuracy per CPU class on one machine: the same graphs scored natively and under an emulated AVX2 CPU.

ONNX Runtime picks its int8 kernels from the CPU it sees. Run under `qemu-x86_64 -cpu EPYC-Milan`
(AVX2 and FMA, no AVX-512, no VNNI: the class whose u8 x s8 kernels saturate), the very same graphs
go through the AVX2 kernels, so the accuracy of each weight grid on that class can be measured on a
VNNI or AMX machine too. Emulation is 50-100x slower, so this scores accuracy only, never speed.

Builds natively (demo weights, `--frames` synthetic frames of an unseen seed, half to calibrate, half
to score): the FP32 pipeline graph and INT8 graphs with 8-bit and 7-bit weights; then evaluates all
three natively and under the emulated CPU. Writes benchmarks/results/int8_isa_emulated_<date>[_<n>].json.
Needs Debian's qemu-user (`apt-get install qemu-user`).

    python benchmarks/int8_isa_emulated.py [--frames 24] [--qemu-cpu EPYC-Milan]
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from results_file import write_result

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "bisenet_rt" / "assets" / "demo_bisenetv2_synth.pth"
GRIDS = ("int8", "int7")


def build(work: Path, frames: int) -> None:
    import onnx

    from bisenet_rt.graph.export import ExportConfig, export_onnx
    from bisenet_rt.model import model_and_sha
    from bisenet_rt.backends import SPECS
    from bisenet_rt.precision import Precision
    from bisenet_rt.int8_grid import WeightRange
    from bisenet_rt.graph.calibration import calibration_files
    from bisenet_rt.graph.qdq import quantize_graph
    from bisenet_rt.data.synth import write_dataset

    write_dataset(work / "synth", n=frames, seed=7, val_fraction=0.5, progress=False)
    model, sha = model_and_sha(DEMO)
    post = SPECS["onnxruntime"].graph_form(Precision.FP32).post
    export_onnx(model, work / "fp32.onnx", ExportConfig(post=post), source_sha256=sha)
    plain = export_onnx(model, None, ExportConfig(plain=True), source_sha256=sha)
    calib = calibration_files(work / "synth" / "leftImg8bit" / "train", frames // 2)
    for grid in GRIDS:
        proto = quantize_graph(plain, calib, cache_dir=work / "cache", progress=False,
                               post=post, weights=WeightRange(grid), target="(compared here)")
        onnx.save(proto, str(work / f"{grid}.onnx"))


def score(work: Path) -> dict:
    """mIoU and agreement with FP32 of the three graphs on the val frames, on the CPU this process sees."""
    from bisenet_rt import Segmenter
    from bisenet_rt.apps.bench import machine_info
    from bisenet_rt.data import open_dataset
    from bisenet_rt.apps.evaluate import evaluate

    names = ("fp32", *GRIDS)
    segs = [Segmenter(work / f"{name}.onnx") for name in names]
    try:
        results = evaluate(segs, open_dataset(work / "synth", "val"), progress=False)
    finally:
        for seg in segs:
            seg.close()
    return {"machine": machine_info(), "frames": results[0].scores.frames,
            "scores": {name: {"miou": round(r.scores.miou, 4), "pixels_agreeing_with_fp32": r.agreement}
                       for name, r in zip(names, results)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--qemu-cpu", default="EPYC-Milan", help="the qemu CPU model to emulate (AVX2 class)")
    parser.add_argument("--score", type=Path, help=argparse.SUPPRESS)  # internal: score WORK and print JSON
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if args.score:
        print(json.dumps(score(args.score)))
        return 0
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        print("qemu-x86_64 is not installed (apt-get install qemu-user)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bisenet_rt_isa_") as tmp:
        work = Path(tmp)
        build(work, args.frames)
        me = [sys.executable, str(Path(__file__).resolve()), "--score", str(work)]
        native = json.loads(subprocess.run(me, check=True, capture_output=True, text=True).stdout)
        emulated = json.loads(subprocess.run([qemu, "-cpu", args.qemu_cpu, *me], check=True, capture_output=True,
                                             text=True).stdout)
    result = {"command": "python " + shlex.join(sys.argv),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "weights": str(DEMO.relative_to(REPO)), "frames": "bisenet_rt.data.synth seed 7, half calibrate, half score",
              "native": native, f"emulated_{args.qemu_cpu}": emulated,
              "note": ("accuracy only: emulated timings are meaningless. Under emulation ONNX Runtime sees qemu's CPUID "
                       f"({args.qemu_cpu}: AVX2 and FMA, no AVX-512, no VNNI); 'machine' there still reads the host's "
                       "/proc/cpuinfo")}
    path = write_result(args.out, "int8_isa_emulated", result)
    for where in ("native", f"emulated_{args.qemu_cpu}"):
        scores = result[where]["scores"]
        print(f"{where}: " + ", ".join(
            f"{k} mIoU {v['miou']:.4f}" + (f" agree {v['pixels_agreeing_with_fp32']:.4%}" if v["pixels_agreeing_with_fp32"]
                                             else "") for k, v in scores.items()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
