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
    from bisenet_rt.apps.viz import draw_legend, overlay

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
        expected = overlay(frame, want, segmenter.palette, alpha=0.5)
        draw_legend(expected, want, segmenter.palette, segmenter.classes)
        np.testing.assert_array_equal(shown, expected)


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
                   "--no-legend", "--quiet") == 0
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


def _png_chunks(data: bytes) -> dict[bytes, bytes]:
    """The chunks of a PNG file, read by the format's own rules (signature, length, type, data, CRC)."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = {}, 8
    while at < len(data):
        (length,) = struct.unpack_from(">I", data, at)
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        assert struct.unpack_from(">I", data, at + 8 + length)[0] == zlib.crc32(kind + body), kind
        chunks[kind] = chunks.get(kind, b"") + body
        at += 12 + length
    return chunks


def test_color_labels_are_palette_pngs_holding_the_ids(exported, segmenter, images, tmp_path):
    """--labels --color: a mode-P PNG (colour type 3): its pixels are the class ids, its palette the class colours,
    as Cityscapes' and MMSegmentation's tools write them; OpenCV shows the colours."""
    import struct
    import zlib

    out = tmp_path / "out"
    assert run_cli(str(images["a"]), "-o", str(out), "--engine", str(exported["fp32"]), "--labels", "--color",
                   "--quiet") == 0
    path = out / "a_labels.png"
    frame = cv2.imread(str(images["a"]))
    want = segmenter(frame)
    chunks = _png_chunks(path.read_bytes())
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (width, height, depth, colour_type) == (frame.shape[1], frame.shape[0], 8, 3)
    palette = np.frombuffer(chunks[b"PLTE"], np.uint8).reshape(-1, 3)
    assert np.array_equal(palette[: segmenter.num_classes], segmenter.palette)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, width + 1)
    assert not rows[:, 0].any()  # filter type 0 on every scanline: the bytes after it are the ids
    np.testing.assert_array_equal(rows[:, 1:], want)
    np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_COLOR), palette[want][..., ::-1])


def test_color_refused_where_it_colours_nothing(exported, images, tmp_path, capsys):
    base = [str(images["a"]), "-o", str(tmp_path / "o"), "--engine", str(exported["fp32"]), "--quiet", "--color"]
    assert run_cli(*base, "--overlay") == 1
    assert "--color colours the label PNGs, and --overlay alone writes none; add --labels" in capsys.readouterr().err
    assert run_cli(*base, "--label-format", "cityscapes") == 1
    assert "the Cityscapes format stays plain label ids" in capsys.readouterr().err


def test_overlay_legend_names_the_classes_present_in_their_colours():
    from bisenet_rt.apps.viz import draw_legend, overlay
    from bisenet_rt.classes import CITYSCAPES_CLASSES, palette

    colours = np.asarray(palette(19), np.uint8)
    labels = np.zeros((400, 600), np.uint8)  # road, with a car (class 13) and a strip of sky (class 10)
    labels[200:300, 100:300] = 13
    labels[:40] = 10
    frame = street_frame(400, 600, seed=1)
    plain = overlay(frame, labels, colours)
    shown = plain.copy()
    x0, y0, x1, y1 = draw_legend(shown, labels, colours, CITYSCAPES_CLASSES)
    assert 0 < x0 < x1 <= 600 and 0 <= y0 < y1 < 200 and x0 > 300  # a box in the top-right corner
    outside = np.ones(labels.shape, bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(shown[outside], plain[outside])  # nothing else is touched
    box = shown[y0:y1, x0:x1].reshape(-1, 3)
    for cls in (0, 13, 10):  # each class present has its swatch in the box
        assert (box == colours[cls][::-1]).all(axis=1).sum() >= 25, CITYSCAPES_CLASSES[cls]
    assert not (box == colours[1][::-1]).all(axis=1).any()  # sidewalk is absent: no swatch
    # largest area first: road (82 %), then sky (10 %), then car (8 %)
    legend = shown[y0:y1, x0:x1]
    rows = [int(np.nonzero((legend == colours[c][::-1]).all(axis=2).any(axis=1))[0][0]) for c in (0, 10, 13)]
    assert rows == sorted(rows) and len(set(rows)) == 3
