"""Train BiSeNetV2 with the booster recipe (aux heads, OHEM, SGD warm-up + poly) on a dataset, fine-tune a
checkpoint (--weights) or continue a run (--resume).

Run under `torchrun --nproc-per-node N` for DistributedDataParallel (one process per GPU; --batch
is per process). The defaults train a small model on a laptop CPU; the paper trained with batch 16
for 150K iterations on GPUs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ._common import model_size_arg

HELP = "train BiSeNetV2 (booster recipe) on a Cityscapes-layout tree or list file, fine-tune or resume a run"
EXAMPLES = """
bisenet-rt train --data data/synth --out runs/scratch --iters 300              # from scratch: lr 0.05
bisenet-rt train --data data/synth --out runs/ft --weights bisenet_rt/assets/demo_bisenetv2_synth.pth --iters 100
bisenet-rt train --resume runs/ft                     # go on where runs/ft stopped, with its data and options
bisenet-rt train --resume runs/ft --workers 0 --stop-at 80      # what changes how it runs, not what it trains
bisenet-rt train --data data/synth --out runs/qat --weights runs/ft/model.pth --qat --iters 200 --lr 0.002
"""

_EPILOG = """\
fine-tuning (--weights): the run follows a recipe that keeps what the checkpoint knew, and says so in
one line: lr 0.005 (a tenth of the from-scratch 0.05; --lr), the usual warm-up (--warmup); aux heads the
checkpoint lacks learn from scratch (lr 0.05, --aux-lr) alone for half the run, at most 1000 iterations
(--aux-head-start), before their gradients reach the network, ramped in over as many again; the
checkpoint's batch-norm statistics kept, not re-estimated from the new batches (--no-freeze-bn re-estimates
them: for a new domain with large batches); and the val mIoU of the checkpoint, then five more along the
way (--eval-every). Options given explicitly win.
Each log line shows the summed loss of all five heads and, in brackets, the main head's alone: the one
inference uses.

resuming (--resume RUN): the run's data, options and folder come from its state; options given again
must be the run's own (anything else is refused), except those that change how it runs, not what it
trains: --workers, --device, --eval-every, --eval-limit, --save-every, --log-every, --stop-at,
--export-demo.
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
    # Every option defaults to None (not given): the library fills in the recipe's value, and a resumed run its own.
    p.epilog = _EPILOG
    p.add_argument("--data", type=Path, metavar="ROOT",
                   help="dataset root (Cityscapes layout) or list file; a resumed run uses its own")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output folder (default runs/train; a resumed run goes on in its own); one that holds an "
                        "earlier run is refused unless --force replaces it")
    p.add_argument("--force", action="store_true", default=None, help="replace the earlier run in --out")
    p.add_argument("--iters", type=int, metavar="N", help="training iterations (default 300)")
    p.add_argument("--batch", type=int, metavar="N", help="frames per iteration and process (default 8)")
    p.add_argument("--crop", type=model_size_arg, metavar="WxH", help="training crop, multiples of 32 (default 512x256)")
    p.add_argument("--scales", type=_positive_scale, nargs="+", metavar="S",
                   help="random-scale set (default the paper's 0.75 1.0 1.25 1.5 1.75 2.0)")
    p.add_argument("--lr", type=float, help="base learning rate (default 0.05 from scratch, 0.005 with --weights)")
    p.add_argument("--weight-decay", type=float, metavar="WD", help="on conv weights only (default 5e-4)")
    p.add_argument("--warmup", dest="warmup_iters", type=int, metavar="N",
                   help="linear warm-up iterations (default min(1000, iters/10))")
    p.add_argument("--aux-head-start", type=int, metavar="N",
                   help="iterations the aux heads learn alone before their gradients reach the network, then "
                        "as many to ramp in (default 0; with --weights lacking aux heads, min(1000, iters/2))")
    p.add_argument("--aux-lr", type=float, metavar="LR",
                   help="learning rate of the aux heads (default --lr; with --weights lacking aux heads, 0.05: "
                        "they learn from scratch)")
    p.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction,
                   help="keep the checkpoint's batch-norm statistics (and use them in training) instead of "
                        "re-estimating them from the batches (default: yes with --weights, no from scratch)")
    p.add_argument("--workers", type=int, metavar="N", help="DataLoader worker processes (default 2)")
    p.add_argument("--skip-bad", action="store_true", default=None,
                   help="check every frame first; leave out (and count) missing, mismatched or out-of-range labels")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: cuda if present")
    p.add_argument("--seed", type=int, metavar="N",
                   help="seed of the initialisation, sampling and augmentation (default 0)")
    p.add_argument("--eval-every", type=int, metavar="N",
                   help="evaluate on val every N iterations, 0 = at the end only (default 0; with --weights, "
                        "iters/5 and once before the first step)")
    p.add_argument("--eval-size", type=model_size_arg, metavar="WxH",
                   help="model size frames are resized to for evaluation (default 1024x512)")
    p.add_argument("--eval-limit", type=int, metavar="N",
                   help="periodic evaluations use the first N val frames only (the final one uses all)")
    p.add_argument("--save-every", type=int, metavar="N",
                   help="write a resumable state every N iterations (default: at the end)")
    p.add_argument("--log-every", type=int, metavar="N", help="log line every N iterations (default 10)")
    p.add_argument("--resume", type=Path, metavar="RUN",
                   help="continue the run in folder RUN (or its train_state.pt) with its data, options and folder")
    p.add_argument("--weights", type=Path, metavar="CKPT",
                   help="fine-tune this checkpoint (the fine-tuning recipe above); aux heads it lacks start fresh")
    p.add_argument("--stop-at", type=int, metavar="N", help="stop early at this iteration, leaving a resumable state")
    p.add_argument("--qat", action="store_true", default=None,
                   help="quantization-aware fine-tune of --weights for 'build --precision int8': float and "
                        "simulated-int8 passes trained together (one process, BN statistics frozen)")
    p.add_argument("--qat-int8-weight", type=float, metavar="W",
                   help="with --qat: weight of the int8 pass's loss (labels as the float pass) against the "
                        "float pass's (default 2)")
    p.add_argument("--export-demo", type=Path, metavar="PATH",
                   help="also save the final model without aux heads, FP16 weights, to PATH")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from ..train import TrainConfig, resume_config, train

    fields = {f.name for f in dataclasses.fields(TrainConfig) if f.init}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if "scales" in given:
        given["scales"] = tuple(given["scales"])
    if "qat_int8_weight" in given and not given.get("qat") and args.resume is None:
        raise ConfigError("--qat-int8-weight weighs the int8 pass of a --qat fine-tune; add --qat or drop it")
    if args.resume is not None:
        config = resume_config(given.pop("resume"), **given)
    elif args.data is None:
        raise ConfigError("--data ROOT is required (a Cityscapes-layout tree or a list file); only --resume RUN "
                          "takes the run's own")
    else:
        config = TrainConfig(**given)
    result = train(config)
    if result.metrics is not None:
        print(f"val mIoU {100 * result.metrics['miou']:.2f}")
    return 0
