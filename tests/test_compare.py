"""`bisenet-rt compare`: artifacts held to the first on the same frames, no dataset; labels and coarse logits."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bisenet_rt import Segmenter
from bisenet_rt.apps.compare import compare, logits_source, synthetic_frames
from bisenet_rt.cli import main
from bisenet_rt.families import DEMO_CHECKPOINT

SIZE = (512, 256)


@pytest.fixture(scope="module")
def results(checkpoint, exported):
    """The reference model (checkpoint), its FP32 and FP16 pipeline graphs, on two synthetic scenes."""
    frames = synthetic_frames(2, SIZE, seed=3)
    segs = [Segmenter(checkpoint, device="cpu"), Segmenter(exported["fp32"]), Segmenter(exported["fp16"])]
    try:
        return compare(segs, frames, device="cpu", progress=False)
    finally:
        for seg in segs:
            seg.close()


def test_graphs_are_held_to_the_reference_by_labels_and_logits(results):
    """FP32: the graph computes what the oracle does (logits within 1e-3; they spread with a standard deviation of
    about 4, so 1e-4 of their scale as in test_export); FP16: labels equal on >= 99 % of pixels (test_export's bar),
    logits off by the rounding of half precision through the network (mean < 0.1, 2.5 % of their scale; the
    largest single difference < 2) and by more than FP32's, so the extra output is the graph's own."""
    reference, fp32, fp16 = results
    assert reference.agreement is None and reference.logits == "reference"
    assert fp32.logits == fp16.logits == "compared"
    assert fp32.agreement >= 0.999 and fp32.worst_frame >= 0.999 and fp32.max_logit_diff < 1e-3
    assert fp16.agreement >= 0.99 and fp16.mean_logit_diff < 0.1 and fp16.max_logit_diff < 2.0
    assert fp16.max_logit_diff > 10 * fp32.max_logit_diff and fp16.mean_logit_diff <= fp16.max_logit_diff


def test_engines_and_ir_say_why_they_have_no_logits():
    for suffix, title in ((".engine", "TensorRT"), (".xml", "OpenVINO")):
        why = logits_source(SimpleNamespace(path=Path(f"model{suffix}")), None)
        assert why == f"not available: {title} artifacts keep their intermediate tensors inside; the labels are compared"


def test_cli_report_and_agreement_bar(checkpoint, exported, tmp_path, capsys):
    out = tmp_path / "c.json"
    argv = ["compare", str(exported["fp32"]), str(checkpoint), "--count", "1", "--size", "512x256", "--json", str(out),
            "--no-progress", "--min-agreement", "99.9"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "1 synthetic street scenes of 512x256 (bisenet_rt.data.synth, seed 0); each artifact against the first" in table
    rep = json.loads(out.read_text())
    assert rep["reference"] == str(exported["fp32"]) and rep["results"][1]["agreement_percent"] >= 99.9
    assert rep["results"][1]["max_abs_logit_diff"] < 1e-3 and rep["results"][1]["logits"] == "compared"
    # other weights label other pixels: below the bar is exit code 1, named
    assert main(["compare", str(checkpoint), str(DEMO_CHECKPOINT), "--count", "1", "--size", "512x256",
                 "--model-size", "512x256", "--no-progress", "--min-agreement", "99"]) == 1
    assert "demo_bisenetv2_synth.pth label fewer than 99 % of the pixels as confident.pth does" in capsys.readouterr().err


def test_cli_needs_two_artifacts(exported, capsys):
    assert main(["compare", str(exported["fp32"])]) == 1
    assert "give two or more artifacts" in capsys.readouterr().err
