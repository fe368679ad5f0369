"""Segmenter over every backend that runs here: same labels as the reference, same errors for bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bisenet_rt import InputError, Segmenter
from bisenet_rt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from bisenet_rt.errors import ArtifactError
from bisenet_rt.model.reference import reference_labels
from bisenet_rt.precision import Precision
from conftest import street_frame


@pytest.fixture(scope="module")
def seg(exported):
    with Segmenter(exported["fp32"]) as s:
        yield s


@pytest.fixture(scope="module")
def frames():
    return [street_frame(512, 1024, seed=7), street_frame(479, 641, seed=8)]


def test_properties(seg):
    assert seg.backend.name == "onnxruntime" and seg.precision is Precision.FP32
    assert seg.classes == CITYSCAPES_CLASSES and seg.num_classes == 19
    assert seg.model_size == (1024, 512) and seg.device.startswith("CPU")
    assert seg.palette.shape == (19, 3) and tuple(seg.palette[13]) == CITYSCAPES_PALETTE[13]


def test_single_frame_equals_reference(seg, frames, confident_model):
    for frame in frames:
        labels = seg(frame)
        ref = reference_labels(confident_model, torch.from_numpy(frame[None])).numpy()[0]
        assert labels.shape == frame.shape[:2] and labels.dtype == np.uint8
        assert (labels == ref).mean() >= 0.999


def test_batches_equal_single_calls(seg, frames):
    batch = np.stack([frames[0], street_frame(512, 1024, seed=9)])
    out = seg(batch)
    assert out.shape == (2, 512, 1024)
    for i in range(2):
        assert np.array_equal(out[i], seg(batch[i]))
    mixed = seg(frames)  # a list of frames of different sizes
    assert [m.shape for m in mixed] == [f.shape[:2] for f in frames]
    assert np.array_equal(mixed[1], seg(frames[1]))


def test_noncontiguous_views_are_accepted(seg, frames):
    big = street_frame(512, 2048, seed=3)
    view = big[:, ::2]  # strided view, 512 x 1024
    assert not view.flags.c_contiguous
    assert np.array_equal(seg(view), seg(np.ascontiguousarray(view)))
    rgb_view = frames[0][..., ::-1]
    assert np.array_equal(seg(rgb_view), seg(np.ascontiguousarray(rgb_view)))


@pytest.mark.parametrize(("bad", "error", "match"), [
    (np.zeros((64, 64, 3), np.float32), TypeError, "dtype float32"),
    (np.zeros((64, 64), np.uint8), InputError, "shape"),
    (np.zeros((64, 64, 4), np.uint8), InputError, "4 channels.*BGRA"),
    (np.zeros((64, 64, 1), np.uint8), InputError, "1 channels.*grayscale"),
    (np.zeros((0, 64, 3), np.uint8), InputError, "empty"),
    (np.zeros((0, 64, 64, 3), np.uint8), InputError, "empty batch"),
    (np.zeros((1, 1, 64, 64, 3), np.uint8), InputError, "5 dimensions"),
    ([], InputError, "empty list"),
    ("frame.png", TypeError, "numpy.ndarray, got str"),
    ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.int16)], TypeError, "frame 1 has dtype int16"),
])
def test_bad_input_is_rejected_clearly(seg, bad, error, match):
    with pytest.raises(error, match=match):
        seg(bad)


def test_torch_backend_is_the_reference(checkpoint, frames, seg):
    with Segmenter(checkpoint) as ref:
        assert ref.backend.name == "torch" and ref.num_classes == 19
        labels = ref(frames[0])
        assert (labels == seg(frames[0])).mean() >= 0.999
        with pytest.raises(TypeError, match="dtype"):
            ref(frames[0].astype(np.float64))


def test_fp16_graph_agrees_with_fp32(exported, frames, seg):
    with Segmenter(exported["fp16"]) as s16:
        assert s16.precision is Precision.FP16
        assert (s16(frames[0]) == seg(frames[0])).mean() >= 0.99


def test_artifact_errors(tmp_path, exported):
    with pytest.raises(ArtifactError, match="no such file"):
        Segmenter(tmp_path / "missing.onnx")
    (tmp_path / "corrupt.onnx").write_bytes(b"not a protobuf" * 10)
    with pytest.raises(ArtifactError, match="corrupt.onnx"):
        Segmenter(tmp_path / "corrupt.onnx")
    with pytest.raises(ArtifactError, match="plain model graph"):
        Segmenter(exported["plain"])
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="unknown artifact type"):
        Segmenter(tmp_path / "model.bin")
    with pytest.raises(ValueError, match="unknown backend"):
        Segmenter(exported["fp32"], backend="tflite")


def test_closed_segmenter_refuses_work(exported, frames):
    s = Segmenter(exported["fp32"])
    s.close()
    s.close()
    with pytest.raises(Exception, match="closed"):
        s(frames[0])
