"""The reference model matches the public checkpoint layout and the paper's structure."""
from __future__ import annotations

import json

import pytest
import torch

from bisenet_rt.model import AUX_HEAD_NAMES, BiSeNetV2
from conftest import DATA

LAYOUT = DATA / "bisenetv2_state_dict_layout.json"


@pytest.fixture(scope="module")
def layout() -> dict:
    return json.loads(LAYOUT.read_text())


def test_state_dict_keys_and_shapes_equal_public_layout(layout):
    model = BiSeNetV2(layout["num_classes"], aux_heads=True)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == layout["keys"]
    assert list(ours) == list(layout["keys"])  # same order too: strict loading of public files


def test_public_layout_loads_strictly(layout):
    state = {k: torch.zeros(shape) for k, shape in layout["keys"].items()}
    BiSeNetV2(19, aux_heads=True).load_state_dict(state, strict=True)


@pytest.mark.parametrize(("aux", "millions"), [(False, 3.36), (True, 5.23)])
def test_parameter_count(aux, millions):
    n = sum(p.numel() for p in BiSeNetV2(19, aux_heads=aux).parameters())
    assert round(n / 1e6, 2) == millions


def test_train_mode_returns_aux_logits_at_input_size():
    model = BiSeNetV2(7, aux_heads=True).train()
    logits, aux = model(torch.randn(2, 3, 64, 128))
    assert logits.shape == (2, 7, 64, 128)
    assert [a.shape for a in aux] == [(2, 7, 64, 128)] * 4


def test_eval_mode_returns_logits_only_and_skips_aux_heads():
    model = BiSeNetV2(19, aux_heads=True).eval()
    called = []
    hooks = [getattr(model, n).register_forward_hook(lambda *a, n=n: called.append(n)) for n in AUX_HEAD_NAMES]
    out = model(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert isinstance(out, torch.Tensor) and out.shape == (1, 19, 64, 64)
    assert called == []


def test_initialisation_follows_the_paper():
    model = BiSeNetV2(19)
    ge_last_bns = [m.conv2[1] for m in model.modules() if type(m).__name__.startswith("GatherExpansion")]
    assert len(ge_last_bns) == 8 and all(float(bn.weight.detach().abs().sum()) == 0.0 for bn in ge_last_bns)
    conv = model.detail.S1[0].conv.weight
    fan_out = conv.shape[0] * conv.shape[2] * conv.shape[3]
    assert abs(float(conv.detach().std()) - (2.0 / fan_out) ** 0.5) < 0.25 * (2.0 / fan_out) ** 0.5
    bn = model.detail.S1[0].bn
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_strip_aux_heads_removes_training_only_weights():
    model = BiSeNetV2(19).strip_aux_heads()
    assert not any(k.startswith(AUX_HEAD_NAMES) for k in model.state_dict())
    assert isinstance(model.train()(torch.randn(2, 3, 64, 64)), torch.Tensor)
