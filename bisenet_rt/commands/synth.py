"""Write procedurally drawn street scenes with exact labels in the Cityscapes layout (a stand-in for Cityscapes)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import check_writable, size_arg

HELP = "generate a synthetic street-scene dataset in the Cityscapes layout"

EXAMPLES = """
bisenet-rt synth -o data/synth --n 400
bisenet-rt synth -o data/small --n 20 --size 512x256 --seed 1
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, type=Path, help="dataset root to write (leftImg8bit/, gtFine/)")
    p.add_argument("--n", type=int, default=200, help="number of frames in all (default 200)")
    p.add_argument("--seed", type=int, default=0, help="frames depend only on the seed and their index (default 0)")
    p.add_argument("--size", type=size_arg, default=(1024, 512), metavar="WxH", help="frame size (default 1024x512)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of the frames that go to the val split (default 0.2)")


def run(args: argparse.Namespace) -> int:
    from ..data.synth import write_dataset

    check_writable(args.output, "-o", folder=True, folder_why="it is the dataset root (leftImg8bit/, gtFine/)")
    summary = write_dataset(args.output, n=args.n, seed=args.seed, size=args.size, val_fraction=args.val_fraction)
    print(f"wrote {summary.train} train + {summary.val} val frames of {summary.size[0]}x{summary.size[1]} "
          f"(seed {summary.seed}) under {summary.root}", file=sys.stderr)
    return 0
