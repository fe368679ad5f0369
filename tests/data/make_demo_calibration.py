"""Regenerate tests/data/demo_calibration/: the INT8 calibration ranges of the demo-model test fixture.

tests/test_int8.py scores the demo model's INT8 graph on 12 unseen synthetic frames (seed 7) after
calibrating on 12 others. Calibrating takes most of that fixture's time, so the ranges it computes
are kept here and copied into the fixture's calibration cache; `quantize_pipeline` uses them when
their key (graph bytes, frames' bytes, method, recipe) matches and calibrates afresh when it does
not, so a stale copy only costs time. Run from the repository root after changing the demo model,
the synthetic scenes or the calibration recipe:

    python tests/data/make_demo_calibration.py
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bisenet_rt.model import model_and_sha
from bisenet_rt.graph.calibration import calibration_files
from bisenet_rt.graph.qdq import quantize_graph
from bisenet_rt.data.synth import write_dataset

HERE = Path(__file__).resolve().parent
DEMO = HERE.parents[1] / "bisenet_rt" / "assets" / "demo_bisenetv2_synth.pth"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        write_dataset(out / "synth", n=24, seed=7, val_fraction=0.5, progress=False)  # as the fixture does
        model, sha = model_and_sha(DEMO)
        calib = calibration_files(out / "synth" / "leftImg8bit" / "train", 12)
        quantize_pipeline(model, calib, cache_dir=out / "cache", source_sha256=sha, progress=False)
        target = HERE / "demo_calibration"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        for path in (out / "cache").glob("*.json"):
            shutil.copy(path, target / path.name)
            print(f"wrote {target / path.name}")


if __name__ == "__main__":
    main()
