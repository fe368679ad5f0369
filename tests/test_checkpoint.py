"""Loading public-layout checkpoints: round trips, wrappers, prefixes, and clear failures."""
from __future__ import annotations

import pytest
import torch

from bisenet_rt.errors import CheckpointError
from bisenet_rt.model import AUX_HEAD_NAMES, BiSeNetV2, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def trained_like():
    torch.manual_seed(1)
    model = BiSeNetV2(19, aux_heads=True)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items() if not k.startswith(AUX_HEAD_NAMES))


def test_round_trip(tmp_path, trained_like):
    path = save_checkpoint(trained_like, tmp_path / "m.pth")
    loaded = load_checkpoint(path)
    assert not loaded.training and not loaded.aux_heads
    assert _same_weights(trained_like, loaded)


def test_round_trip_keeps_aux_heads_when_asked(tmp_path, trained_like):
    loaded = load_checkpoint(save_checkpoint(trained_like, tmp_path / "m.pth"), aux_heads=True)
    assert torch.equal(loaded.aux5_4.conv_out[1].weight, trained_like.aux5_4.conv_out[1].weight)


def test_without_aux_keys_loads(tmp_path, trained_like):
    state = {k: v for k, v in trained_like.state_dict().items() if not k.startswith(AUX_HEAD_NAMES)}
    torch.save(state, tmp_path / "noaux.pth")
    assert _same_weights(trained_like, load_checkpoint(tmp_path / "noaux.pth"))


def test_ddp_prefix_and_wrapper(tmp_path, trained_like):
    state = {f"module.{k}": v for k, v in trained_like.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ddp.pth")
    assert _same_weights(trained_like, load_checkpoint(tmp_path / "ddp.pth"))


def test_class_count_is_inferred(tmp_path):
    torch.save(BiSeNetV2(11, aux_heads=False).state_dict(), tmp_path / "camvid.pth")
    assert load_checkpoint(tmp_path / "camvid.pth").num_classes == 11
    with pytest.raises(CheckpointError, match="11 classes"):
        load_checkpoint(tmp_path / "camvid.pth", num_classes=19)


def test_fp16_checkpoint_loads_as_fp32(tmp_path, trained_like):
    loaded = load_checkpoint(save_checkpoint(trained_like, tmp_path / "h.pth", half=True))
    assert loaded.head.conv_out[1].weight.dtype == torch.float32
    assert torch.allclose(loaded.head.conv_out[1].weight, trained_like.head.conv_out[1].weight, rtol=1e-3, atol=1e-3)


def test_foreign_state_dict_names_offending_keys(tmp_path, trained_like):
    state = dict(trained_like.state_dict())
    state.pop("detail.S1.0.conv.weight")
    state["backbone.layer1.weight"] = torch.zeros(3)
    state["bga.conv.0.weight"] = torch.zeros(1, 1, 3, 3)
    torch.save(state, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "foreign.pth")
    message = str(info.value)
    assert "missing keys: detail.S1.0.conv.weight" in message
    assert "unexpected keys: backbone.layer1.weight" in message
    assert "mis-shaped keys: bga.conv.0.weight (1, 1, 3, 3) != (128, 128, 3, 3)" in message


def test_unrelated_model_is_rejected(tmp_path):
    torch.save(torch.nn.Linear(3, 4).state_dict(), tmp_path / "linear.pth")
    with pytest.raises(CheckpointError, match="not a BiSeNetV2 checkpoint"):
        load_checkpoint(tmp_path / "linear.pth")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="corrupt or not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "bad.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_checkpoint(tmp_path / "list.pth")


def test_state_dict_without_bn_counters_loads(tmp_path, trained_like):
    """Older PyTorch and converters write no `num_batches_tracked`; plain load_state_dict(strict=True) takes that."""
    state = {k: v for k, v in trained_like.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    assert _same_weights(trained_like, load_checkpoint(tmp_path / "old.pth"))


def test_empty_and_text_files_say_what_they_are(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty \(0 bytes\).*fetch it again"):
        load_checkpoint(tmp_path / "empty.pth")
    (tmp_path / "page.pth").write_text("<!DOCTYPE html><html>404 Not Found</html>\n")
    with pytest.raises(CheckpointError, match="a text file .*download the .pth checkpoint itself"):
        load_checkpoint(tmp_path / "page.pth")


def test_whole_pickled_module_asks_for_its_state_dict(tmp_path):
    torch.save(BiSeNetV2(19, aux_heads=False), tmp_path / "module.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "module.pth")
    message = str(info.value)
    assert "bisenet_rt.model.bisenetv2.BiSeNetV2" in message and "torch.save(model.state_dict(), PATH)" in message
    assert "\n" not in message


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, trained_like, bad):
    state = dict(trained_like.state_dict())
    state["bga.conv.0.weight"] = state["bga.conv.0.weight"].clone()
    state["bga.conv.0.weight"][0, 0, 0, 0] = bad
    torch.save(state, tmp_path / "diverged.pth")
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) hold NaN or Inf values \(first: bga.conv.0.weight\)"):
        load_checkpoint(tmp_path / "diverged.pth")
