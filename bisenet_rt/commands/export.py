"""Export BiSeNetV2 to ONNX: by default the whole pipeline (uint8 BGR frames in, uint8 labels out)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..classes import DEFAULT_MODEL_SIZE
from ._common import check_writable, model_size_arg, output_file_arg, precision_arg, size_arg

HELP = "export the model (with in-graph pre/post-processing) to ONNX"

EXAMPLES = """
bisenet-rt export -o engines/demo.onnx --weights bisenet_rt/assets/demo_bisenetv2_synth.pth
bisenet-rt export -o engines/city.onnx --weights model_final_v2_city.pth --model-size 2048x1024 --precision fp16
bisenet-rt export -o engines/camera.onnx --weights model.pth --frame-size 1280x720 --batch 1
bisenet-rt export -o plain.onnx --weights model.pth --plain
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, type=output_file_arg, help="path of the .onnx file to write")
    p.add_argument("--weights", help="checkpoint (.pth/.pt; CoinCheung/BiSeNet or MMSegmentation, told from its keys); "
                                     "without it the weights are random")
    p.add_argument("--precision", type=precision_arg, default="fp32", choices=["fp32", "fp16"],
                   help="graph precision (fp16: FP16 weights and activations, I/O unchanged)")
    p.add_argument("--model-size", type=model_size_arg, default=DEFAULT_MODEL_SIZE, metavar="WxH",
                   help="size frames are resized to inside the graph (multiples of 32; default 1024x512, the "
                        "paper's speed protocol; 2048x1024 reproduces the published mIoU of the public weights)")
    p.add_argument("--plain", action="store_true",
                   help="export the bare model: float N x 3 x h x w normalized RGB in, logits out")
    p.add_argument("--post", choices=["resize", "separable"], default="resize",
                   help="layout of the exact post-processing: 'resize' (default; TensorRT, OpenVINO) or "
                        "'separable' (faster on ONNX Runtime CPUs); the labels are the same")
    p.add_argument("--frame-size", type=size_arg, metavar="WxH",
                   help="fix the input frame size (default: any size)")
    p.add_argument("--batch", type=int, metavar="1",
                   help="fix the batch to 1, the only batch a graph fixes (default: any batch; an engine bounds it "
                        "with 'bisenet-rt build --max-batch N')")


def run(args: argparse.Namespace) -> int:
    from ..artifacts import RANDOM_WEIGHTS
    from ..graph.export import ExportConfig, export_facts, export_onnx, num_classes_of
    from ..model import model_and_sha

    config = ExportConfig(precision=args.precision, model_size=args.model_size, plain=args.plain, post=args.post,
                          frame_size=args.frame_size, batch=args.batch)
    check_writable(args.output, "-o")
    if args.weights:
        from ..outputs import check_outputs

        check_outputs([(Path(args.output), "the exported graph")], [(Path(args.weights), "the --weights checkpoint")])
    model, sha = model_and_sha(args.weights)
    export_onnx(model, args.output, config, source_sha256=sha)
    kind = "plain model" if args.plain else "pipeline"
    print(f"wrote {args.output} ({kind}, {config.precision.value}, model size {config.model_size[0]}x{config.model_size[1]}, "
          f"weights: {args.weights or 'random'})", file=sys.stderr)
    facts = export_facts(config, num_classes_of(model), sha, model.family)
    if facts.random_weights:
        print(f"warning: {args.output}: {RANDOM_WEIGHTS} (timings hold)", file=sys.stderr)
    elif facts.published_family is not None:  # not for the demo model or a head of other classes
        print(facts.published_family.protocol_note(config.model_size), file=sys.stderr)
    return 0
