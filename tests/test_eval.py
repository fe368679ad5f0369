"""`evaluate` and `bisenet-rt eval`: several artifacts scored on the same synthetic frames, side by side."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from bisenet_rt import Segmenter
from bisenet_rt.artifacts import RANDOM_WEIGHTS
from bisenet_rt.cli import main
from bisenet_rt.data import open_dataset
from bisenet_rt.errors import DataError
from bisenet_rt.apps.evaluate import evaluate, format_table, report
from bisenet_rt.apps.metrics import ConfusionMatrix
from bisenet_rt.data.synth import write_dataset

SIZE = (256, 128)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, n=4, seed=5, size=SIZE, val_fraction=0.75, progress=False)   # 1 train, 3 val
    return root


@pytest.fixture(scope="module")
def results(exported, checkpoint, synth_root):
    """fp32 ONNX, fp16 ONNX and the PyTorch reference on the same three val frames."""
    dataset = open_dataset(synth_root, "val")
    segs = [Segmenter(exported["fp32"]), Segmenter(exported["fp16"]), Segmenter(checkpoint)]
    try:
        return dataset, evaluate(segs, dataset, progress=False)
    finally:
        for s in segs:
            s.close()


def test_one_confusion_matrix_per_artifact_over_every_frame(results, synth_root, exported):
    dataset, (fp32, fp16, torch_ref) = results
    pixels = sum(int((label != 255).sum()) for _, label in dataset)
    for r in (fp32, fp16, torch_ref):
        assert r.scores.frames == 3 and r.scores.pixels == pixels
        assert r.scores.confusion.shape == (19, 19) and r.scores.confusion.sum() == pixels
    assert (fp32.backend, fp32.precision) == ("onnxruntime", "fp32")
    assert (fp16.precision, torch_ref.backend) == ("fp16", "torch")
    # the same numbers as scoring the frames by hand
    manual = ConfusionMatrix(19)
    with Segmenter(exported["fp32"]) as seg:
        for image, label in dataset:
            manual.update(seg(image), label)
    assert np.array_equal(manual.matrix, fp32.scores.confusion)


def test_onnx_agrees_with_the_pytorch_reference(results):
    _, (fp32, fp16, torch_ref) = results
    pixels = fp32.scores.pixels
    # each disagreeing pixel moves one count between two cells: 0.1% of pixels -> at most 0.2% of counts
    assert np.abs(fp32.scores.confusion - torch_ref.scores.confusion).sum() <= 0.002 * pixels
    assert abs(fp32.scores.miou - torch_ref.scores.miou) < 0.01
    assert torch_ref.agreement >= 0.999
    assert fp16.agreement >= 0.99
    assert np.abs(fp32.scores.confusion - fp16.scores.confusion).sum() <= 0.02 * pixels


def test_table_and_report(results):
    dataset, res = results
    table = format_table(res)
    lines = table.splitlines()
    assert lines[0].split()[-3:] == ["fp32.onnx", "fp16.onnx", "confident.pth"]
    assert lines[1].startswith("road") and any(l.startswith("mIoU") for l in lines)
    assert any(l.startswith("pixel accuracy") for l in lines) and any(l.startswith("same as first") for l in lines)
    rows = {name: next(l for l in lines if l.startswith(name)).split()[-3:] for name in ("mIoU", "mAcc", "road")}
    rep = json.loads(json.dumps(report(res, dataset)))
    # console and JSON in one unit, percent (the JSON's keys say so)
    for name, key in (("mIoU", "miou_percent"), ("mAcc", "mean_accuracy_percent")):
        assert [float(v) for v in rows[name]] == pytest.approx([r[key] for r in rep["results"]], abs=0.006)
    assert [float(v) for v in rows["road"]] == pytest.approx([r["iou_percent"]["road"] for r in rep["results"]],
                                                             abs=0.006)
    assert [r["miou_percent"] for r in rep["results"]] == pytest.approx([100 * r.scores.miou for r in res], abs=1e-3)
    assert rep["dataset"]["frames"] == 3 and rep["dataset"]["kind"] == "cityscapes"
    assert [r["precision"] for r in rep["results"]] == ["fp32", "fp16", "fp32"]
    matrix = rep["results"][0]["confusion_matrix"]
    assert (matrix["rows"], matrix["columns"], matrix["classes"]) == ("ground truth", "prediction", list(dataset.names))
    assert np.array_equal(matrix["counts"], res[0].scores.confusion)
    assert set(rep["results"][0]["iou_percent"]) == set(dataset.names)
    assert [r["random_weights"] for r in rep["results"]] == [True, True, False]
    assert "onnxruntime" in rep["results"][0]["versions"] and "torch" in rep["results"][2]["versions"]
    assert lines[-1] == f"fp32.onnx, fp16.onnx: {RANDOM_WEIGHTS}"


def test_class_count_mismatch_is_refused(exported, tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "i.png"), np.zeros((32, 64, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "l.png"), np.zeros((32, 64), np.uint8))
    (tmp_path / "val.txt").write_text("i.png,l.png\n")
    with Segmenter(exported["fp32"]) as seg, pytest.raises(DataError, match="predicts 19 classes.*has 3"):
        evaluate([seg], open_dataset(tmp_path, num_classes=3), progress=False)


def test_cli_with_json(exported, synth_root, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(["eval", "--data", str(synth_root), "--engine", str(exported["fp32"]), "--engine",
                 str(exported["fp16"]), "--json", str(out), "--limit", "2", "--no-progress"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "cityscapes val: 2 frames" in stdout and "fp16.onnx" in stdout and "mIoU" in stdout
    rep = json.loads(out.read_text())
    assert [r["artifact"] for r in rep["results"]] == [str(exported["fp32"]), str(exported["fp16"])]
    assert rep["results"][0]["frames"] == 2 and 0.0 <= rep["results"][1]["miou_percent"] <= 100.0


def test_cli_bad_frames_and_missing_artifact(exported, synth_root, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    next((data / "gtFine" / "val").rglob("*_labelIds.png")).unlink()
    args = ["eval", "--data", str(data), "--engine", str(exported["fp32"]), "--no-progress", "--limit", "1"]
    assert main(args) == 1
    assert "label file" in capsys.readouterr().err
    assert main(args + ["--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 bad frame" in captured.err and "(1 skipped)" in captured.out
    if os.environ.get("BISENET_RT_ENGINES"):
        pytest.skip("BISENET_RT_ENGINES is set: the default engines folder is not the working directory's")
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--data", str(synth_root), "--no-progress"]) == 1
    assert "no --artifact given and no artifact under engines/" in capsys.readouterr().err
    (tmp_path / "engines").mkdir()
    shutil.copy(exported["fp32"], tmp_path / "engines" / "newest.onnx")
    assert main(["eval", "--data", str(synth_root), "--no-progress", "--limit", "1"]) == 0
    assert "newest.onnx" in capsys.readouterr().out
