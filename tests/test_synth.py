"""The synthetic street-scene generator: deterministic, exact Cityscapes label ids, readable as Cityscapes."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from bisenet_rt.classes import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_ID_TO_TRAIN_ID
from bisenet_rt.cli import main
from bisenet_rt.data import open_dataset
from bisenet_rt.data.cityscapes import INSTANCE_IDS_SUFFIX, TRAIN_IDS_SUFFIX, parse_frame_id
from bisenet_rt.data.synth import SYNTH_CLASSES, frame_paths, generate_frame, label_id, sibling_label_path, write_dataset

SIZE = (256, 128)


def test_same_seed_same_frame_other_seed_other_frame():
    a_img, a_lab = generate_frame(3, 5, size=SIZE)
    b_img, b_lab = generate_frame(3, 5, size=SIZE)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    c_img, c_lab = generate_frame(4, 5, size=SIZE)
    d_img, _ = generate_frame(3, 6, size=SIZE)
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_lab, c_lab)
    assert not np.array_equal(a_img, d_img)


@pytest.mark.parametrize("size", [(256, 128), (320, 200), (1024, 512)])
def test_sizes_and_types(size):
    image, label = generate_frame(0, 1, size=size)
    assert image.shape == (size[1], size[0], 3) and image.dtype == np.uint8
    assert label.shape == (size[1], size[0]) and label.dtype == np.uint8


def test_label_ids_are_cityscapes_ids_of_the_drawn_classes():
    allowed = {label_id(name) for name in SYNTH_CLASSES} | {1}          # 1 = ego vehicle -> ignore
    seen = set()
    for i in range(8):
        _, label = generate_frame(0, i, size=SIZE)
        values = set(np.unique(label).tolist())
        assert values <= allowed, values - allowed
        seen |= values
    train = {CITYSCAPES_CLASSES[CITYSCAPES_LABEL_ID_TO_TRAIN_ID[v]] for v in seen if v in CITYSCAPES_LABEL_ID_TO_TRAIN_ID}
    # the big classes and the thin ones all show up within a handful of frames
    assert {"road", "sidewalk", "building", "vegetation", "sky", "car", "person", "pole", "traffic sign"} <= train
    assert label_id("road") == 7 and label_id("car") == 26 and label_id("sky") == 23


def test_road_lies_below_the_sky():
    for i in range(4):
        _, label = generate_frame(1, i, size=SIZE)
        rows = np.arange(label.shape[0])[:, None].repeat(label.shape[1], 1)
        assert rows[label == label_id("road")].mean() > rows[label == label_id("sky")].mean()
        assert (label[-1] == label_id("road")).any() or (label[-1] == 1).any()


def test_written_tree_is_read_by_the_cityscapes_reader(tmp_path):
    summary = write_dataset(tmp_path, n=5, seed=2, size=SIZE, val_fraction=0.4, progress=False)
    assert (summary.train, summary.val) == (3, 2)
    image_path, label_path = frame_paths(tmp_path, "val", 4)
    # Cityscapes' own pattern, <city>_<sequence>_<frame>_<kind>.png, as cityscapesScripts parses it
    assert image_path == tmp_path / "leftImg8bit/val/synth/synth_000000_000004_leftImg8bit.png"
    assert label_path == tmp_path / "gtFine/val/synth/synth_000000_000004_gtFine_labelIds.png"
    assert parse_frame_id(image_path.name) == parse_frame_id(label_path.name) == ("synth", 0, 4)
    train_ids = cv2.imread(str(sibling_label_path(label_path, TRAIN_IDS_SUFFIX)), cv2.IMREAD_UNCHANGED)
    instance_ids = cv2.imread(str(sibling_label_path(label_path, INSTANCE_IDS_SUFFIX)), cv2.IMREAD_UNCHANGED)
    assert sibling_label_path(label_path, TRAIN_IDS_SUFFIX).name == "synth_000000_000004_gtFine_labelTrainIds.png"
    train, val = open_dataset(tmp_path, "train"), open_dataset(tmp_path, "val")
    assert (len(train), len(val)) == (3, 2) and train.kind == "cityscapes"
    image, label = val[1]
    want_image, want_ids = generate_frame(2, 4, size=SIZE)
    assert np.array_equal(image, want_image)                             # PNG is lossless
    assert np.array_equal(cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED), want_ids)
    assert label[want_ids == label_id("car")].tolist() == [CITYSCAPES_CLASSES.index("car")] * int(
        (want_ids == label_id("car")).sum())
    assert set(np.unique(label).tolist()) <= set(range(19)) | {255}
    assert np.array_equal(train_ids, label)  # the train-id file holds what the reader maps the label ids to
    assert instance_ids.dtype == np.uint16 and np.array_equal(instance_ids, want_ids)  # crowd regions: label ids


def test_frames_do_not_depend_on_n(tmp_path):
    write_dataset(tmp_path / "a", n=2, seed=0, size=SIZE, val_fraction=0.0, progress=False)
    write_dataset(tmp_path / "b", n=4, seed=0, size=SIZE, val_fraction=0.0, progress=False)
    a, b = open_dataset(tmp_path / "a", "train"), open_dataset(tmp_path / "b", "train")
    assert np.array_equal(a[1][0], b[1][0])


def test_cli(tmp_path, capsys):
    assert main(["synth", "-o", str(tmp_path), "--n", "3", "--seed", "1", "--size", "128x64",
                 "--val-fraction", "0.34"]) == 0
    assert "wrote 2 train + 1 val frames of 128x64" in capsys.readouterr().err
    assert open_dataset(tmp_path, "val")[0][0].shape == (64, 128, 3)
    assert main(["synth", "-o", str(tmp_path), "--n", "0"]) == 1
    assert "--n must be at least 1" in capsys.readouterr().err
    assert main(["synth", "-o", str(tmp_path), "--n", "2", "--size", "8x8"]) == 1
    assert "too small" in capsys.readouterr().err
