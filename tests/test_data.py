"""Dataset readers on tiny generated trees: Cityscapes, list files, CamVid; bad data named or skipped."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from bisenet_rt.classes import CAMVID_CLASSES, CITYSCAPES_CLASSES, CITYSCAPES_LABEL_ID_TO_TRAIN_ID
from bisenet_rt.data import open_dataset
from bisenet_rt.data.listfile import read_list, write_list
from bisenet_rt.errors import DataError


def _city_tree(root, split="val", frames=3, size=(48, 32)):
    """A Cityscapes tree whose labels use every label id 0..33 plus 255, in a known pattern."""
    rng = np.random.default_rng(0)
    w, h = size
    for i in range(frames):
        city = "aachen" if i % 2 == 0 else "bremen"
        stem = f"{city}_{i:06d}_000019"
        img_dir = root / "leftImg8bit" / split / city
        gt_dir = root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(img_dir / f"{stem}_leftImg8bit.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        ids = (np.arange(h * w).reshape(h, w) + i) % 35
        ids[ids == 34] = 255
        cv2.imwrite(str(gt_dir / f"{stem}_gtFine_labelIds.png"), ids.astype(np.uint8))
    return root


@pytest.fixture()
def city(tmp_path):
    return _city_tree(tmp_path / "cs")


def test_cityscapes_reader_maps_label_ids_to_train_ids(city):
    ds = open_dataset(city, "val")
    assert ds.kind == "cityscapes" and len(ds) == 3 and ds.skipped == 0
    assert ds.names == CITYSCAPES_CLASSES and ds.num_classes == 19
    image, label = ds[0]
    assert image.shape == (32, 48, 3) and image.dtype == np.uint8
    assert label.shape == (32, 48) and label.dtype == np.uint8
    raw = cv2.imread(str(ds.files[0][1]), cv2.IMREAD_UNCHANGED)
    expected = np.full(256, 255, np.uint8)
    for lid, tid in CITYSCAPES_LABEL_ID_TO_TRAIN_ID.items():
        expected[lid] = tid
    assert np.array_equal(label, expected[raw])
    assert set(np.unique(label)) == set(range(19)) | {255}
    assert label[raw == 7].tolist() == [0] * int((raw == 7).sum())       # road
    assert (label[raw == 0] == 255).all() and (label[raw == 255] == 255).all()
    assert np.array_equal(image, cv2.imread(str(ds.files[0][0])))
    assert [p[0].name for p in ds.files] == sorted(p[0].name for p in ds.files)


def test_cityscapes_train_id_labels_are_read_as_they_are(tmp_path):
    root = _city_tree(tmp_path / "cs", frames=1)
    label = next((root / "gtFine").rglob("*_labelIds.png"))
    train_ids = (np.arange(32 * 48).reshape(32, 48) % 19).astype(np.uint8)
    cv2.imwrite(str(label).replace("_labelIds", "_labelTrainIds"), train_ids)
    label.unlink()
    ds = open_dataset(root)
    assert np.array_equal(ds[0][1], train_ids)


def test_list_file_with_relative_paths(tmp_path, city):
    src = open_dataset(city)
    data = tmp_path / "custom"
    (data / "img").mkdir(parents=True)
    (data / "lbl").mkdir()
    pairs = []
    for i, (image, label) in enumerate(src):
        cv2.imwrite(str(data / "img" / f"{i}.png"), image)
        cv2.imwrite(str(data / "lbl" / f"{i}.png"), label)        # train ids already
        pairs.append((f"img/{i}.png", f"lbl/{i}.png"))
    (data / "val.txt").write_text("# custom data\n\n" + "".join(f"{a},{b}\n" for a, b in pairs))
    for root in (data, data / "val.txt"):                       # folder with val.txt, or the file itself
        ds = open_dataset(root, "val")
        assert ds.kind == "list" and len(ds) == 3 and ds.num_classes == 19
        for i in range(3):
            assert np.array_equal(ds[i][1], src[i][1]) and np.array_equal(ds[i][0], src[i][0])
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)                                 # paths are relative to the list's folder
    assert np.array_equal(open_dataset(moved)[2][1], src[2][1])
    out = write_list(tmp_path / "again.txt", [(data / "img/0.png", data / "lbl/0.png")])
    assert out.read_text() == "custom/img/0.png,custom/lbl/0.png\n"
    assert read_list(out) == [(tmp_path / "custom/img/0.png", tmp_path / "custom/lbl/0.png")]


def test_list_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "val.txt"
    bad.write_text("a.png,b.png\njust_one.png\n")
    with pytest.raises(DataError, match=r"val.txt:2: expected 'image,label'"):
        open_dataset(bad)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="names no frames"):
        open_dataset(tmp_path / "empty.txt")


def test_list_file_num_classes_bounds_the_labels(tmp_path):
    cv2.imwrite(str(tmp_path / "i.png"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "l.png"), np.array([[0, 1, 2, 255]] * 4, np.uint8))
    (tmp_path / "val.txt").write_text("i.png,l.png\n")
    assert open_dataset(tmp_path, num_classes=3)[0][1].max() == 255
    ds = open_dataset(tmp_path, num_classes=2)
    assert ds.names == ("class_0", "class_1")
    with pytest.raises(DataError, match=r"l.png: label values 2 are outside the class range; expected train ids 0..1"):
        ds[0]


def test_camvid_layout(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "val").mkdir(exist_ok=True)
        (tmp_path / "valannot").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "val" / f"{name}.png"), np.full((8, 12, 3), 100, np.uint8))
        cv2.imwrite(str(tmp_path / "valannot" / f"{name}.png"), (np.arange(96).reshape(8, 12) % 12).astype(np.uint8))
    ds = open_dataset(tmp_path, "val")
    assert ds.kind == "camvid" and len(ds) == 2 and ds.names == CAMVID_CLASSES and ds.num_classes == 11
    label = ds[0][1]
    raw = (np.arange(96).reshape(8, 12) % 12)
    assert (label[raw == 11] == 255).all() and np.array_equal(label[raw < 11], raw[raw < 11])


# -- bad data --------------------------------------------------------------------------------------------
def _label_of(ds, i):
    return ds.files[i][1]


def test_missing_label_is_named_or_skipped(city):
    victim = _label_of(open_dataset(city), 1)
    victim.unlink()
    with pytest.raises(DataError, match=f"its label file {victim} is missing.*--skip-bad"):
        open_dataset(city)
    ds = open_dataset(city, skip_bad=True)
    assert len(ds) == 2 and ds.skipped == 1 and "missing" in ds.problems[0]


def test_size_mismatch_is_named_or_skipped(city):
    victim = _label_of(open_dataset(city), 2)
    cv2.imwrite(str(victim), np.zeros((30, 48), np.uint8))
    with pytest.raises(DataError, match=f"{victim.name}: label is 48x30 but its image .* is 48x32"):
        open_dataset(city)
    ds = open_dataset(city, skip_bad=True)
    assert len(ds) == 2 and ds.skipped == 1


def test_out_of_range_label_values_are_named_or_skipped(city):
    victim = _label_of(open_dataset(city), 0)
    cv2.imwrite(str(victim), np.full((32, 48), 40, np.uint8))
    ds = open_dataset(city)                                   # found when the frame is read
    with pytest.raises(DataError, match=f"{victim.name}: label values 40 are outside the class range"):
        ds[0]
    ds = open_dataset(city, skip_bad=True)
    assert len(ds) == 2 and ds.skipped == 1 and "label values 40" in ds.problems[0]


def test_colour_and_corrupt_files_are_named(city):
    files = open_dataset(city).files
    cv2.imwrite(str(files[0][1]), np.dstack([np.zeros((32, 48), np.uint8), np.ones((32, 48), np.uint8),
                                              np.zeros((32, 48), np.uint8)]))
    files[1][0].write_bytes(b"not a png at all")
    ds = open_dataset(city)
    with pytest.raises(DataError, match="colour image"):
        ds[0]
    with pytest.raises(DataError, match="not a readable image"):
        ds[1]
    assert open_dataset(city, skip_bad=True).skipped == 2


def test_roots_without_data_say_what_is_expected(tmp_path):
    with pytest.raises(DataError, match="no such file or folder; expected a Cityscapes tree"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="no dataset found for split 'val'.*leftImg8bit.*list file"):
        open_dataset(tmp_path)
    (tmp_path / "leftImg8bit" / "val").mkdir(parents=True)
    with pytest.raises(DataError, match="no frames found; expected a Cityscapes tree"):
        open_dataset(tmp_path)
    with pytest.raises(ValueError, match="unknown dataset kind"):
        open_dataset(tmp_path, kind="coco")


def test_subset_keeps_the_first_frames(city):
    ds = open_dataset(city)
    small = ds.subset(2)
    assert len(small) == 2 and small.files == ds.files[:2] and len(ds) == 3
