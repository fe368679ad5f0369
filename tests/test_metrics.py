"""mIoU by the standard definition, against confusion matrices worked out by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bisenet_rt.apps.metrics import ConfusionMatrix, confusion_matrix, scores_from_confusion

IGN = 255


def test_confusion_matrix_counts_pixels_and_skips_ignore():
    gt = np.array([[0, 0, 1, 1],
                   [2, 2, IGN, IGN]], np.uint8)
    pred = np.array([[0, 1, 1, 1],
                     [2, 0, 2, 0]], np.uint8)   # predictions under ignore pixels do not count
    cm = confusion_matrix(pred, gt, 3)
    # rows = ground truth, columns = prediction
    assert cm.tolist() == [[1, 1, 0],
                           [0, 2, 0],
                           [1, 0, 1]]
    assert cm.dtype == np.int64


def test_iou_miou_and_pixel_accuracy_by_hand():
    cm = np.array([[1, 1, 0],
                   [0, 2, 0],
                   [1, 0, 1]])
    s = scores_from_confusion(cm, ("a", "b", "c"))
    # class a: TP 1, FN 1, FP 1 -> 1/3;  b: TP 2, FN 0, FP 1 -> 2/3;  c: TP 1, FN 1, FP 0 -> 1/2
    assert s.iou == pytest.approx((1 / 3, 2 / 3, 1 / 2))
    assert s.miou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert s.pixel_accuracy == pytest.approx(4 / 6)
    assert s.mean_accuracy == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert s.pixels == 6


def test_class_absent_from_truth_and_prediction_is_left_out_of_the_mean():
    cm = np.array([[3, 1, 0, 0],
                   [0, 4, 0, 0],
                   [0, 0, 0, 0],     # class 2: absent from truth and prediction -> no IoU
                   [0, 2, 0, 0]])   # class 3: in truth only, never predicted -> IoU 0, counted
    s = scores_from_confusion(cm)
    assert s.iou[2] is None
    assert s.iou[3] == 0.0
    assert s.iou[0] == pytest.approx(3 / 4)
    assert s.iou[1] == pytest.approx(4 / 7)
    assert s.miou == pytest.approx((3 / 4 + 4 / 7 + 0.0) / 3)
    assert s.pixel_accuracy == pytest.approx(7 / 10)


def test_class_only_predicted_counts_as_zero():
    gt = np.array([0, 0, 0, 0], np.uint8)
    pred = np.array([0, 0, 1, 1], np.uint8)
    s = scores_from_confusion(confusion_matrix(pred, gt, 3))
    assert s.iou == (pytest.approx(0.5), 0.0, None)
    assert s.miou == pytest.approx(0.25)


def test_one_matrix_over_the_split_is_not_the_mean_of_frames():
    acc = ConfusionMatrix(2)
    acc.update(np.array([[0, 0, 0, 1]]), np.array([[0, 0, 0, 0]]))   # frame 1: IoU0 3/4, IoU1 0
    acc.update(np.array([[1, 1]]), np.array([[1, 1]]))                # frame 2: IoU1 1
    s = acc.scores(("x", "y"))
    assert acc.frames == 2
    assert acc.matrix.tolist() == [[3, 1], [0, 2]]
    assert s.iou == pytest.approx((3 / 4, 2 / 3))                     # from the summed matrix
    assert s.miou == pytest.approx((3 / 4 + 2 / 3) / 2)


def test_only_ignore_pixels_give_nan_scores():
    s = scores_from_confusion(confusion_matrix(np.zeros((2, 2), np.uint8), np.full((2, 2), IGN, np.uint8), 2))
    assert s.pixels == 0 and math.isnan(s.miou) and math.isnan(s.pixel_accuracy)
    j = s.to_json()
    assert j["miou"] is None and j["iou"] == {"class_0": None, "class_1": None}


def test_to_json_is_plain_json():
    s = scores_from_confusion(np.array([[2, 0], [1, 1]]), ("road", "car"), frames=3)
    j = json.loads(json.dumps(s.to_json(confusion=True)))
    assert j["iou"] == {"road": pytest.approx(2 / 3), "car": pytest.approx(1 / 2)}
    assert j["confusion"] == [[2, 0], [1, 1]] and j["frames"] == 3 and j["pixels"] == 4


@pytest.mark.parametrize(("pred", "gt", "match"), [
    (np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8), "differ in shape"),
    (np.full((2, 2), 5, np.uint8), np.zeros((2, 2), np.uint8), "predicted class ids outside"),
    (np.zeros((2, 2), np.uint8), np.full((2, 2), 7, np.uint8), "ground-truth values outside"),
])
def test_bad_inputs_raise(pred, gt, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(pred, gt, 3)


def test_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, (40, 50)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.2] = IGN
    pred = rng.integers(0, 5, (40, 50)).astype(np.uint8)
    cm = confusion_matrix(pred, gt, 5)
    brute = np.zeros((5, 5), np.int64)
    for t, p in zip(gt.ravel(), pred.ravel()):
        if t != IGN:
            brute[t, p] += 1
    assert np.array_equal(cm, brute)
    s = scores_from_confusion(cm)
    for c in range(5):
        inter = np.sum((gt == c) & (pred == c))
        union = np.sum(((gt == c) | (pred == c)) & (gt != IGN))
        assert s.iou[c] == pytest.approx(inter / union)
