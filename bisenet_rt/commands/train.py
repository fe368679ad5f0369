"""Train BiSeNetV2 with the booster recipe (aux heads, OHEM, SGD warm-up + poly) on a dataset.

Run under `torchrun --nproc-per-node N` for DistributedDataParallel (one process per GPU; --batch
is per process). The defaults train a small model on a laptop CPU; the paper trained with batch 16
for 150K iterations on GPUs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ._common import model_size_arg

HELP = "train BiSeNetV2 (booster recipe) on a Cityscapes-layout tree or list file"
EXAMPLES = """
bisenet-rt train --data data/synth --out runs/scratch --iters 300
bisenet-rt train --data data/synth --out runs/ft --weights bisenet_rt/assets/demo_bisenetv2_synth.pth --iters 100
bisenet-rt train --data data/synth --out runs/qat --weights runs/ft/model.pth --qat --iters 200 --lr 0.002
"""


def _positive_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad scale {text!r}: expected a positive number such as 0.75") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"bad scale {text!r}: scales must be positive")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..classes import DEFAULT_MODEL_SIZE

    p.add_argument("--data", type=Path, required=True, metavar="ROOT",
                   help="dataset root (Cityscapes layout) or list file")
    p.add_argument("--out", type=Path, default=Path("runs/train"), metavar="DIR",
                   help="output folder (default runs/train); one that holds an earlier run is refused unless "
                        "--resume continues that run or --force replaces it")
    p.add_argument("--force", action="store_true", help="replace the earlier run in --out")
    p.add_argument("--iters", type=int, default=300, metavar="N", help="training iterations (default 300)")
    p.add_argument("--batch", type=int, default=8, metavar="N", help="frames per iteration and process (default 8)")
    p.add_argument("--crop", type=model_size_arg, default=(512, 256), metavar="WxH",
                   help="training crop, multiples of 32 (default 512x256)")
    p.add_argument("--scales", type=_positive_scale, nargs="+", default=None, metavar="S",
                   help="random-scale set (default the paper's 0.75 1.0 1.25 1.5 1.75 2.0)")
    p.add_argument("--lr", type=float, default=5e-2, help="base learning rate (default 0.05)")
    p.add_argument("--weight-decay", type=float, default=5e-4, metavar="WD",
                   help="on conv weights only (default 5e-4)")
    p.add_argument("--warmup", type=int, default=None, metavar="N",
                   help="linear warm-up iterations (default min(1000, iters/10))")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="DataLoader worker processes (default 2)")
    p.add_argument("--skip-bad", action="store_true",
                   help="check every frame first; leave out (and count) missing, mismatched or out-of-range labels")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: cuda if present")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the initialisation, sampling and augmentation (default 0)")
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="evaluate on val every N iterations (default: at the end only)")
    p.add_argument("--eval-size", type=model_size_arg, default=DEFAULT_MODEL_SIZE, metavar="WxH",
                   help="model size frames are resized to for evaluation (default 1024x512)")
    p.add_argument("--eval-limit", type=int, default=None, metavar="N",
                   help="periodic evaluations use the first N val frames only (the final one uses all)")
    p.add_argument("--save-every", type=int, default=0, metavar="N",
                   help="write a resumable state every N iterations (default: at the end)")
    p.add_argument("--log-every", type=int, default=10, metavar="N", help="log line every N iterations (default 10)")
    p.add_argument("--resume", type=Path, metavar="PATH",
                   help="train_state.pt of an earlier run (or its folder); repeat that run's options")
    p.add_argument("--weights", type=Path, metavar="CKPT",
                   help="start from this checkpoint's weights (fine-tuning); aux heads it lacks start fresh")
    p.add_argument("--stop-at", type=int, default=None, metavar="N",
                   help="stop early at this iteration, leaving a resumable state")
    p.add_argument("--qat", action="store_true",
                   help="quantization-aware fine-tune of --weights for 'build --precision int8': float and "
                        "simulated-int8 passes trained together (one process, BN statistics frozen)")
    p.add_argument("--qat-int8-weight", type=float, default=None, metavar="W",
                   help="with --qat: weight of the int8 pass's loss (labels as the float pass) against the "
                        "float pass's (default 2)")
    p.add_argument("--export-demo", type=Path, default=None, metavar="PATH",
                   help="also save the final model without aux heads, FP16 weights, to PATH")


def run(args: argparse.Namespace) -> int:
    from ..train import DEFAULT_SCALES, TrainConfig, train

    if args.qat_int8_weight is not None and not args.qat:
        raise ConfigError("--qat-int8-weight weighs the int8 pass of a --qat fine-tune; add --qat or drop it")

    config = TrainConfig(data=args.data, out=args.out, iters=args.iters, batch=args.batch, crop=args.crop,
                         scales=tuple(args.scales) if args.scales else DEFAULT_SCALES, lr=args.lr,
                         weight_decay=args.weight_decay, warmup_iters=args.warmup, workers=args.workers,
                         device=args.device, seed=args.seed, eval_every=args.eval_every, eval_size=args.eval_size,
                         eval_limit=args.eval_limit, save_every=args.save_every, log_every=args.log_every,
                         resume=args.resume, weights=args.weights, stop_at=args.stop_at, export_demo=args.export_demo,
                         qat=args.qat, skip_bad=args.skip_bad, force=args.force, **({} if args.qat_int8_weight is None else {"qat_int8_weight": args.qat_int8_weight}))
    result = train(config)
    if result.metrics is not None:
        print(f"val mIoU {100 * result.metrics['miou']:.2f}")
    return 0
