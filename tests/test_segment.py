"""`bisenet-rt segment` on images and folders: label PNGs equal the Segmenter's labels, overlays, bad input."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import street_frame


@pytest.fixture(scope="module")
def segmenter(exported):
    from bisenet_rt import Segmenter

    with Segmenter(exported["fp32"]) as seg:
        yield seg


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """Two loose images (PNG, BMP) and a folder with a nested JPEG and PNG, of different sizes."""
    root = tmp_path_factory.mktemp("images")
    (root / "folder" / "sub").mkdir(parents=True)
    paths = {"a": root / "a.png", "b": root / "b.bmp", "c": root / "folder" / "c.png",
             "d": root / "folder" / "sub" / "d.jpg"}
    sizes = {"a": (96, 160), "b": (64, 128), "c": (72, 96), "d": (80, 120)}
    for i, (key, path) in enumerate(paths.items()):
        cv2.imwrite(str(path), street_frame(*sizes[key], seed=10 + i))
    (root / "folder" / "notes.txt").write_text("not an image, and not picked up from a folder\n")
    paths["root"] = root
    return paths


def run_cli(*argv: str) -> int:
    from bisenet_rt.cli import main

    return main(["segment", *argv])


def read_labels(path: Path) -> np.ndarray:
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert labels is not None, path
    return labels


def test_label_pngs_equal_segmenter_and_overlays_written(exported, segmenter, images, tmp_path):
    from bisenet_rt.apps.viz import overlay

    out = tmp_path / "out"
    assert run_cli(str(images["a"]), str(images["b"]), "-o", str(out), "--engine", str(exported["fp32"]),
                   "--quiet") == 0
    for key in ("a", "b"):
        frame = cv2.imread(str(images[key]))
        want = segmenter(frame)
        got = read_labels(out / f"{images[key].stem}_labels.png")
        assert got.dtype == np.uint8 and got.shape == frame.shape[:2]
        np.testing.assert_array_equal(got, want)
        assert len(np.unique(want)) > 1  # the comparison covers several classes
        shown = cv2.imread(str(out / f"{images[key].stem}_overlay.png"))
        np.testing.assert_array_equal(shown, overlay(frame, want, segmenter.palette, alpha=0.5))


def test_folder_is_searched_recursively_and_mirrored(exported, segmenter, images, tmp_path):
    out = tmp_path / "out"
    assert run_cli(str(images["root"] / "folder"), "-o", str(out), "--engine", str(exported["fp32"]), "--labels",
                   "--quiet") == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["c_labels.png", "sub/d_labels.png"]  # --labels alone: no overlays
    np.testing.assert_array_equal(read_labels(out / "sub" / "d_labels.png"), segmenter(cv2.imread(str(images["d"]))))


def test_overlay_only_with_alpha(exported, segmenter, images, tmp_path):
    from bisenet_rt.apps.viz import overlay

    out = tmp_path / "out"
    assert run_cli(str(images["a"]), "-o", str(out), "--engine", str(exported["fp32"]), "--overlay", "--alpha", "1",
                   "--quiet") == 0
    assert [p.name for p in out.iterdir()] == ["a_overlay.png"]
    frame = cv2.imread(str(images["a"]))
    np.testing.assert_array_equal(cv2.imread(str(out / "a_overlay.png")),
                                  overlay(frame, segmenter(frame), segmenter.palette, alpha=1.0))


def test_unreadable_image_fails_naming_it_or_is_skipped(exported, images, tmp_path, capsys):
    bad_dir = tmp_path / "mixed"
    bad_dir.mkdir()
    (bad_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    cv2.imwrite(str(bad_dir / "good.png"), street_frame(64, 96, seed=3))
    out = tmp_path / "out"
    assert run_cli(str(bad_dir), "-o", str(out), "--engine", str(exported["fp32"]), "--quiet") == 1
    err = capsys.readouterr().err
    assert "broken.png: cannot be read as an image" in err and "--skip-bad" in err
    assert run_cli(str(bad_dir), "-o", str(out), "--engine", str(exported["fp32"]), "--quiet", "--skip-bad") == 0
    err = capsys.readouterr().err
    assert "skipping" in err and "broken.png" in err and "skipped 1 unreadable image" in err
    assert (out / "good_labels.png").is_file() and not (out / "broken_labels.png").exists()


def test_bad_arguments_error_clearly(exported, images, tmp_path, capsys, monkeypatch):
    engine = str(exported["fp32"])
    cases = [
        ([str(tmp_path / "missing.png"), "-o", str(tmp_path / "o"), "--engine", engine], "missing.png: no such file"),
        ([str(images["root"] / "folder" / "notes.txt"), "-o", str(tmp_path / "o"), "--engine", engine],
         "unknown input type '.txt'"),
        (["-o", str(tmp_path / "o"), "--engine", engine], "nothing to segment"),
        ([str(images["a"]), "-o", str(tmp_path / "o.mp4"), "--engine", engine], "names a video file"),
        ([str(images["a"]), "-o", str(tmp_path / "o"), "--engine", engine, "--alpha", "2"], "--alpha must be in"),
        ([str(images["a"]), "--camera", "0", "-o", str(tmp_path / "o"), "--engine", engine], "not both"),
        ([str(images["a"]), "-o", str(tmp_path / "o"), "--engine", str(exported["plain"])], "plain model graph"),
    ]
    for argv, message in cases:
        assert run_cli(*argv) == 1, argv
        assert message in capsys.readouterr().err, (argv, message)
    # Two inputs that would write the same file are refused before anything is written.
    twin = tmp_path / "twin"
    twin.mkdir()
    cv2.imwrite(str(twin / "a.png"), street_frame(32, 32))
    assert run_cli(str(images["a"]), str(twin / "a.png"), "-o", str(tmp_path / "dup"), "--engine", engine) == 1
    assert "would both write" in capsys.readouterr().err and not (tmp_path / "dup").exists()
    # No --engine and nothing built: say how to get an artifact.
    monkeypatch.chdir(tmp_path)
    assert run_cli(str(images["a"]), "-o", str(tmp_path / "o")) == 1
    assert "no --artifact given and no artifact under engines/" in capsys.readouterr().err


def test_cityscapes_label_ids_named_for_the_official_evaluation(exported, segmenter, tmp_path):
    """city_seq_frame_leftImg8bit.png -> the same name under OUT, holding label ids (train ids mapped back)."""
    from bisenet_rt.classes import CITYSCAPES_LABEL_ID_TO_TRAIN_ID

    frames = tmp_path / "leftImg8bit" / "val" / "berlin"
    frames.mkdir(parents=True)
    name = "berlin_000000_000019_leftImg8bit.png"
    cv2.imwrite(str(frames / name), street_frame(64, 128, seed=3))
    out = tmp_path / "results"
    assert run_cli(str(tmp_path / "leftImg8bit" / "val"), "-o", str(out), "--engine", str(exported["fp32"]),
                   "--label-format", "cityscapes", "--quiet") == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [f"berlin/{name}"]
    train_ids = segmenter(cv2.imread(str(frames / name)))
    label_ids = read_labels(out / "berlin" / name)
    to_label_id = {train: label for label, train in CITYSCAPES_LABEL_ID_TO_TRAIN_ID.items()}
    np.testing.assert_array_equal(label_ids, np.vectorize(to_label_id.get)(train_ids).astype(np.uint8))
    assert len(np.unique(label_ids)) > 1


def test_cityscapes_format_refuses_other_names_and_overlays(exported, images, tmp_path, capsys):
    engine = str(exported["fp32"])
    assert run_cli(str(images["a"]), "-o", str(tmp_path / "o"), "--engine", engine, "--label-format", "cityscapes",
                   "--quiet") == 1
    assert "needs Cityscapes file names" in capsys.readouterr().err
    assert run_cli(str(images["a"]), "-o", str(tmp_path / "o"), "--engine", engine, "--label-format", "cityscapes",
                   "--overlay", "--quiet") == 1
    assert "writes only the label-id PNGs" in capsys.readouterr().err
