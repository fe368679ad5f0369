"""Checkpoint families: MMSeg checkpoints load as they are and match the real MMSeg model; the family travels on."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import reference_fixtures, reference_state
from bisenet_rt.families import COINCHEUNG, MMSEG, BGAUpsample, BGAVariant, ChannelOrder
from bisenet_rt.model import BiSeNetV2, load_checkpoint, save_checkpoint
from bisenet_rt.model.mmseg_layout import from_mmseg

fixtures = reference_fixtures()


@pytest.fixture(scope="module")
def mmseg_checkpoint(tmp_path_factory):
    """An MMSeg checkpoint file as MMSeg's runner writes it: meta (numpy values in it) + state_dict, aux heads included."""
    path = tmp_path_factory.mktemp("mmseg") / "bisenetv2_mmseg.pth"
    meta = {"mmseg_version": "1.2.2", "dataset_meta": {"classes": ("road",) * 19, "palette": np.zeros((19, 3))},
            "hook_msgs": {"best_score": np.float64(0.7321), "last_ckpt": "iter_160000.pth"}}
    torch.save({"meta": meta, "state_dict": reference_state("mmseg")}, path)
    return path


def test_every_non_aux_mmseg_key_maps_to_ours_with_its_shape():
    state = reference_state("mmseg")
    ours, unknown = from_mmseg(state)
    expected = BiSeNetV2(19, aux_heads=False, bga=MMSEG.bga).state_dict()
    assert unknown == []
    assert len(ours) == sum(1 for k in state if not k.startswith("auxiliary_head.")) == len(expected)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in expected.items()}


def test_mmseg_checkpoint_matches_the_real_mmseg_logits(mmseg_checkpoint):
    from bisenet_rt.model.reference import reference_logits

    reference = np.load(fixtures.REFERENCE)
    model = load_checkpoint(mmseg_checkpoint)
    assert model.family is MMSEG and model.bga_variant == MMSEG.bga
    logits = reference_logits(model, torch.from_numpy(reference["frame"])[None], fixtures.FRAME_SIZE).numpy()
    scale = float(np.abs(reference["logits"]).max())
    # Same operations in the same order as MMSeg: only float rounding of other kernels may differ.
    assert np.abs(logits - reference["logits"]).max() <= 1e-5 * scale
    assert (logits.argmax(1) == reference["logits"].argmax(1)).all()


def test_coincheung_checkpoint_matches_its_own_model_and_demo_preprocessing(tmp_path):
    from bisenet_rt.model.reference import reference_logits

    reference = np.load(fixtures.COINCHEUNG_REFERENCE)
    torch.save(reference_state("coincheung"), tmp_path / "model_final_v2_city.pth")
    model = load_checkpoint(tmp_path / "model_final_v2_city.pth")
    assert model.family is COINCHEUNG and model.bga_variant == BGAVariant()
    logits = reference_logits(model, torch.from_numpy(reference["frame"])[None], fixtures.FRAME_SIZE).numpy()
    assert np.abs(logits - reference["logits"]).max() <= 1e-5 * float(np.abs(reference["logits"]).max())
    assert (logits.argmax(1) == reference["logits"].argmax(1)).all()


def test_the_variant_and_the_normalization_both_matter(mmseg_checkpoint):
    """With CoinCheung's BGA or normalization the same weights give other logits, so the test above can fail."""
    from bisenet_rt.model.reference import reference_logits

    reference = np.load(fixtures.REFERENCE)
    frame = torch.from_numpy(reference["frame"])[None]
    mmseg = load_checkpoint(mmseg_checkpoint)
    nearest = BiSeNetV2(19, aux_heads=False, bga=BGAVariant(BGAUpsample.NEAREST, pointwise_bias=True)).eval()
    nearest.load_state_dict(mmseg.state_dict())
    nearest.family = MMSEG
    wrong_norm = BiSeNetV2(19, aux_heads=False, bga=MMSEG.bga).eval()
    wrong_norm.load_state_dict(mmseg.state_dict())
    wrong_norm.family = COINCHEUNG
    scale = float(np.abs(reference["logits"]).max())
    for model in (nearest, wrong_norm):
        logits = reference_logits(model, frame, fixtures.FRAME_SIZE).numpy()
        assert np.abs(logits - reference["logits"]).max() > 1e-2 * scale


def test_our_checkpoint_of_an_mmseg_network_keeps_its_family(tmp_path, mmseg_checkpoint):
    model = load_checkpoint(mmseg_checkpoint, aux_heads=True)
    again = load_checkpoint(save_checkpoint(model, tmp_path / "tuned.pth"))
    assert again.family is MMSEG
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())


def test_mmseg_checkpoint_of_another_network_names_the_keys(tmp_path):
    state = reference_state("mmseg")
    state["backbone.layer1.conv.weight"] = torch.zeros(3)
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "other.pth")
    with pytest.raises(Exception, match="MMSegmentation checkpoint, but not of BiSeNetV2.*backbone.layer1.conv.weight"):
        load_checkpoint(tmp_path / "other.pth")


def test_exported_pipeline_normalizes_for_mmseg_and_says_so(tmp_path, mmseg_checkpoint, capsys):
    """`export --weights` an MMSeg file: the in-graph preprocessing uses MMSeg's mean/std, so ONNX Runtime labels
    equal the real MMSeg arg-max, and the metadata and sidecar info state the family and its protocol."""
    import onnx
    import onnxruntime as ort

    from bisenet_rt.artifacts import ArtifactInfo, info_from_sidecar
    from bisenet_rt.backends.tensorrt.conformance import check_tensorrt
    from bisenet_rt.classes import MMSEG_MEAN_RGB, MMSEG_STD_RGB
    from bisenet_rt.artifacts import read_metadata

    reference = np.load(fixtures.REFERENCE)
    from bisenet_rt.cli import main

    path = tmp_path / "mmseg.onnx"
    assert main(["export", "--weights", str(mmseg_checkpoint), "--model-size", "64x32", "-o", str(path)]) == 0
    assert "this run resizes to 64x32" in capsys.readouterr().err
    meta = read_metadata(onnx.load(str(path)))
    normalization = json.loads(meta["normalization"])
    assert meta["family"] == "mmseg" and normalization["channel_order"] == "rgb"
    assert normalization["mean_rgb"] == list(MMSEG_MEAN_RGB) and normalization["std_rgb"] == list(MMSEG_STD_RGB)
    assert normalization["value_range"] == 255.0
    info = ArtifactInfo.from_metadata(meta)
    assert info.family == "mmseg" and info.classes == MMSEG.classes and info.normalization == MMSEG.normalization
    sidecar = {"info": info.to_dict()}  # what every builder writes next to its artifact
    assert sidecar["info"]["normalization"] == normalization
    assert info_from_sidecar(json.loads(json.dumps(sidecar))) == info  # one schema, read back the same way
    assert check_tensorrt(onnx.load(str(path))) == []  # the bilinear BGA upsample is a Resize TensorRT parses
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels = session.run(None, {"frames": reference["frame"][None]})[0]
    # The reference's smallest top-1/top-2 margin is far above float rounding, so every label must agree.
    assert (labels == reference["logits"].argmax(1)).all()


def test_segmenter_on_an_mmseg_pth_reports_its_family(mmseg_checkpoint):
    from bisenet_rt import Segmenter

    reference = np.load(fixtures.REFERENCE)
    with Segmenter(mmseg_checkpoint, device="cpu", model_size=fixtures.FRAME_SIZE) as seg:
        assert seg.family is MMSEG and seg.backend.info.family == "mmseg"
        assert (seg(reference["frame"]) == reference["logits"].argmax(1)[0]).all()


def test_eval_scores_a_checkpoint_at_two_model_sizes_and_states_the_protocol(tmp_path, mmseg_checkpoint, capsys):
    from bisenet_rt.cli import main
    from bisenet_rt.data.synth import write_dataset

    write_dataset(tmp_path / "synth", n=2, seed=1, size=(256, 128), val_fraction=0.5, progress=False)
    report = tmp_path / "report.json"
    assert main(["eval", "--data", str(tmp_path / "synth"), "--engine", str(mmseg_checkpoint), "--model-size",
                 "128x64", "--model-size", "256x128", "--no-progress", "--json", str(report)]) == 0
    out, err = capsys.readouterr()
    assert "bisenetv2_mmseg.pth@128x64" in out and "bisenetv2_mmseg.pth@256x128" in out
    assert err.count("score 73.21 mIoU on Cityscapes val at model size 2048x1024") == 1  # once for both columns
    assert ("bisenetv2_mmseg.pth@128x64, bisenetv2_mmseg.pth@256x128 resize to 128x64/256x128, so expect another "
            "mIoU (--model-size 2048x1024 scores a checkpoint at it)") in err
    results = json.loads(report.read_text())["results"]
    assert [r["model_size"] for r in results] == ["128x64", "256x128"]
    assert results[1]["agreement_with_first_percent"] < 100.0  # the size changes the labels


@pytest.mark.parametrize("order", list(ChannelOrder))
@pytest.mark.parametrize("family", [COINCHEUNG, MMSEG], ids=lambda f: f.name)
def test_oracle_and_graph_preprocessing_normalize_alike(family, order):
    """pipeline.preprocess and the graph's multiply-add both compute (pixel - mean) / std in the family's units."""
    import dataclasses

    import onnx
    import onnxruntime as ort
    from onnx import helper

    from bisenet_rt.model.reference import preprocess
    from bisenet_rt.graph.prepost import FLOAT, preprocess_nodes

    norm = dataclasses.replace(family.normalization, order=order)
    frame = np.load(fixtures.REFERENCE)["frame"][None]
    ordered = frame[..., ::-1] if order is ChannelOrder.RGB else frame
    want = (ordered.astype(np.float64) * (norm.value_range / 255.0) - norm.mean) / norm.std
    got = preprocess(torch.from_numpy(frame), fixtures.FRAME_SIZE, norm).numpy()
    np.testing.assert_allclose(got, want.transpose(0, 3, 1, 2), rtol=0, atol=1e-5)
    pre = preprocess_nodes("frames", "x", fixtures.FRAME_SIZE, FLOAT, norm)
    w, h = fixtures.FRAME_SIZE
    graph = helper.make_graph(pre.part.nodes, "pre", [helper.make_tensor_value_info("frames", onnx.TensorProto.UINT8,
                                                                                    [1, h, w, 3])],
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, h, w])],
                              initializer=pre.part.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"frames": frame})[0], got, rtol=0, atol=1e-5)
