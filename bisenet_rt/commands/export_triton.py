"""Write a Triton Inference Server model repository for a TensorRT engine or a pipeline ONNX."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from ._common import check_writable, newest_artifact_or_fail, size_arg

HELP = "write a Triton Inference Server model repository (config.pbtxt + model.plan/model.onnx)"

EXAMPLES = """
bisenet-rt export-triton -o model_repository --engine engines/bisenetv2_fp16.engine
bisenet-rt export-triton -o model_repository --onnx engines/demo.onnx --max-batch 8 --instances 2
"""

_EPILOG = """\
layout written:
  REPO/NAME/config.pbtxt        platform tensorrt_plan (engine) or onnxruntime_onnx (ONNX),
                                uint8 'frames' [-1, -1, 3] in, uint8 'labels' [-1, -1] out
                                (batch dimension implicit: max_batch_size), dynamic batching,
                                instance groups, class names under parameters
  REPO/NAME/VERSION/model.plan  or model.onnx: a copy of the artifact
  REPO/NAME/labels.txt          class names, line i = class id i
Serve it with: docker run --gpus all -p8000:8000 -p8001:8001 -v $PWD/REPO:/models
  nvcr.io/nvidia/tritonserver:<release>-py3 tritonserver --model-repository=/models
An engine only loads in a Triton release built on the same TensorRT version as the engine.
Without --engine/--onnx the newest artifact under engines/ is used.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = _EPILOG
    p.add_argument("-o", "--output", type=Path, required=True, metavar="REPO", help="model repository folder")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--engine", type=Path, help="TensorRT engine (.engine/.plan) with its .json sidecar")
    src.add_argument("--onnx", type=Path, help="pipeline ONNX from 'bisenet-rt export' or 'bisenet-rt build'")
    p.add_argument("--name", default="bisenetv2", help="model name (folder under REPO; letters, digits, '_', '-' and "
                                                        "'.', at most 128; default bisenetv2)")
    p.add_argument("--max-batch", type=int, help="max_batch_size (default: the engine's profile maximum; 8 for ONNX)")
    p.add_argument("--instances", type=int, default=1, help="model instances per device (default 1)")
    p.add_argument("--device", choices=["gpu", "cpu"],
                   help="instance kind: KIND_GPU or KIND_CPU (default: gpu for engines, cpu for ONNX)")
    p.add_argument("--queue-delay-us", type=int, default=2000,
                   help="dynamic batching: longest wait for a fuller batch, microseconds (default 2000)")
    p.add_argument("--frame-size", type=size_arg, metavar="WxH",
                   help="pin the frame size in the config (Triton then rejects other sizes before inference)")
    p.add_argument("--version", type=int, default=1, help="model version folder (default 1)")
    p.add_argument("--force", action="store_true", help="overwrite an existing model file of that version")


def run(args: argparse.Namespace) -> int:
    from ..apps.triton import describe_artifact, export_triton

    if args.onnx is not None and args.onnx.suffix.lower() != ".onnx":
        raise ConfigError(f"--onnx {args.onnx}: expected a .onnx file; give engines with --engine")
    if args.engine is not None and args.engine.suffix.lower() == ".onnx":
        raise ConfigError(f"--engine {args.engine}: this is an ONNX graph; give it with --onnx")
    artifact = args.engine or args.onnx or newest_artifact_or_fail(
        "--engine or --onnx", "'bisenet-rt build' or 'bisenet-rt export -o PATH.onnx'")
    check_writable(args.output, "-o", folder=True, folder_why="it is the model repository folder")
    model = describe_artifact(artifact)
    for note in model.notes:
        print(f"note: {note}", file=sys.stderr)
    model_dir = export_triton(model, args.output, name=args.name, max_batch=args.max_batch,
                              instances=args.instances, device=args.device, queue_delay_us=args.queue_delay_us,
                              version=args.version, frame_size=args.frame_size, force=args.force)
    print(f"wrote {model_dir}/config.pbtxt and {model_dir}/{args.version}/ from {artifact}", file=sys.stderr)
    print(model_dir)
    return 0
