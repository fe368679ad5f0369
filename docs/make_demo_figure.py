"""Regenerate docs/demo_synth.png: a synthetic val frame, its ground truth and the demo model's overlay.

    python docs/make_demo_figure.py [--data data/synth] [--index 5]
(`bisenet-rt synth -o data/synth --n 400 --seed 0` makes the data.)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from bisenet_rt import Segmenter
from bisenet_rt.data import open_dataset
from bisenet_rt.apps.viz import colorize, overlay

DEMO = Path(__file__).resolve().parents[1] / "bisenet_rt" / "assets" / "demo_bisenetv2_synth.pth"


def _caption(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.putText(out, text, (12, 34), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 4, cv2.LINE_AA)
    cv2.putText(out, text, (12, 34), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2, cv2.LINE_AA)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--data", default="data/synth")
    parser.add_argument("--index", type=int, default=5)
    parser.add_argument("-o", "--output", default=str(Path(__file__).with_name("demo_synth.png")))
    args = parser.parse_args()
    image, truth = open_dataset(args.data, "val")[args.index]
    with Segmenter(DEMO) as seg:
        labels = seg(image)
    tiles = [_caption(image, "synthetic frame"), _caption(colorize(truth), "ground truth"),
             _caption(overlay(image, labels, seg.palette), "demo model (overlay)")]
    figure = cv2.resize(np.concatenate(tiles, axis=1), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    cv2.imwrite(args.output, figure, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
