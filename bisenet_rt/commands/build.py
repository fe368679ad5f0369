"""Build a runtime artifact: a TensorRT engine on a GPU machine, else an OpenVINO IR (CPUs with BF16) or an optimized
ONNX Runtime model, from a checkpoint (--weights), an exported graph (--onnx) or random weights."""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from ..classes import DEFAULT_MODEL_SIZE
from ..errors import ConfigError
from ._common import check_writable, model_size_arg, output_file_arg, precision_arg, size_arg

HELP = "build a TensorRT engine / optimized ONNX Runtime model / OpenVINO IR under engines/"

EXAMPLES = """
bisenet-rt build --weights bisenet_rt/assets/demo_bisenetv2_synth.pth
bisenet-rt build --weights model.pth --precision fp16 --backend tensorrt --max-batch 4
bisenet-rt build --onnx engines/demo.onnx --backend onnxruntime -o engines/demo_ort.onnx
bisenet-rt build --weights model.pth --precision int8 --calib data/synth/leftImg8bit/train
bisenet-rt build --weights model.pth --calib data/synth/leftImg8bit/train   # CPU: int8 where it holds, else float
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", type=precision_arg, default=None,
                   help="fp32, fp16, bf16 (OpenVINO) or int8 (default: the fastest precision this machine computes "
                        "accurately: fp32 on TensorRT, bf16 on CPUs with BF16 arithmetic, else fp32; with --calib and "
                        "--weights on a CPU with VNNI or AMX, int8, kept if its labels agree with FP32 on the "
                        "calibration frames, else the float choice is built; without --calib, such a checked int8 "
                        "artifact of the same weights in the engines folder is reused)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", type=Path, help="checkpoint to export from (default: random weights)")
    src.add_argument("--onnx", type=Path, help="an exported pipeline ONNX to build from")
    p.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime", "openvino"],
                   help="auto: TensorRT where TensorRT and a GPU are present, else the fastest CPU path")
    p.add_argument("-o", "--output", type=output_file_arg, help="artifact path (default engines/bisenetv2_<precision>.<ext>)")
    p.add_argument("--engines-dir", type=Path, help="where artifacts go (default engines/, or $BISENET_RT_ENGINES)")
    p.add_argument("--cache-dir", type=Path, help="calibration ranges and TensorRT timing cache (default: the user's "
                   "cache folder, ~/.cache/bisenet-rt, or $BISENET_RT_CACHE)")
    p.add_argument("--model-size", type=model_size_arg, default=None, metavar="WxH",
                   help="size frames are resized to inside the artifact, multiples of 32 (default 1024x512, the "
                        "paper's speed protocol; 2048x1024 is the published accuracy protocol); not with --onnx, "
                        "whose graph keeps the size it was exported at")
    p.add_argument("--max-batch", type=int, default=1, help="TensorRT profile: largest batch (default 1)")
    p.add_argument("--min-size", type=size_arg, default=(2048, 1024), metavar="WxH",
                   help="TensorRT profile: smallest frame (default 2048x1024)")
    p.add_argument("--max-size", type=size_arg, default=(2048, 1024), metavar="WxH",
                   help="TensorRT profile: largest frame (default 2048x1024)")
    p.add_argument("--opt-level", type=int, default=3, help="TensorRT builder optimization level 0..5 (default 3)")
    p.add_argument("--calib", type=Path, help="int8: folder of calibration frames")
    p.add_argument("--calib-count", type=int, default=200, help="int8: number of calibration frames (default 200)")
    p.add_argument("--int8-target", default="auto", choices=["auto", "vnni", "avx2"],
                   help="int8: the CPU class the weights are rounded for: 'vnni' (8-bit; VNNI/AMX CPUs, TensorRT), "
                        "'avx2' (7-bit; CPUs with only AVX2, where 8-bit weights saturate); auto: this machine")


def run(args: argparse.Namespace) -> int:
    from ..artifacts import RANDOM_WEIGHTS_CURE, open_artifact
    from ..builder import BuildConfig, build

    if args.onnx is not None and args.model_size is not None:
        raise ConfigError(f"--model-size applies to builds from --weights; --onnx {args.onnx} keeps the model size it "
                          "was exported at (export it again with 'bisenet-rt export --model-size WxH')")
    if args.output is not None:
        check_writable(args.output, "-o")
    for option, folder in (("--engines-dir", args.engines_dir), ("--cache-dir", args.cache_dir)):
        if folder is not None:
            check_writable(folder, option, folder=True)
    folders = {k: v for k, v in (("engines_dir", args.engines_dir), ("cache_dir", args.cache_dir)) if v is not None}
    config = BuildConfig(precision=args.precision, backend=args.backend, weights=args.weights, onnx=args.onnx,
                         output=args.output, model_size=args.model_size or DEFAULT_MODEL_SIZE, **folders,
                         max_batch=args.max_batch, min_size=args.min_size, max_size=args.max_size,
                         opt_level=args.opt_level, calib=args.calib, calib_count=args.calib_count,
                         int8_target=args.int8_target)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the artifact's path, for scripts
        path = build(config)
    if open_artifact(path).info.random_weights:  # said again at the end, where it is seen
        print(f"warning: {path} holds random weights: predictions are meaningless (timings hold); "
              f"{RANDOM_WEIGHTS_CURE}", file=sys.stderr)
    print(path)
    return 0
