"""Shared fixtures: a BiSeNetV2 with confident logits, street-like frames, exported pipeline graphs.

Random-init weights give near-tied logits (arg-max decided by noise), which would make label
comparisons meaningless. `confident_model` re-calibrates BatchNorm statistics on street-like
frames and scales the classifier so logits spread by several units: its median top-1/top-2
margin is asserted in test_export.py, so the comparisons there really test something.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bisenet_rt.samples import street_frame  # noqa: E402  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
#: Reference files the suite reads, copied from the project's shared/reference/ so a plain clone runs every test.
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session", autouse=True)
def _own_cache_folder(tmp_path_factory):
    """Caches the code writes by default (OpenVINO, calibration, timing) go to a folder of the run, not the user's."""
    from bisenet_rt.settings import CACHE_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("user_cache")))
        yield
def reference_fixtures():
    """tests/data/make_reference_fixtures.py as a module: its generators rebuild the reference checkpoints."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_reference_fixtures", DATA / "make_reference_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_state(layout: str) -> dict:
    """The state dict the real model of a family was filled with for its reference logits ("mmseg", "coincheung")."""
    import json

    import torch

    fixtures = reference_fixtures()
    if layout == "mmseg":
        keys = {k: shape for k, shape, _ in json.loads(fixtures.LAYOUT.read_text())["keys"]}
    else:
        keys = json.loads(fixtures.COINCHEUNG_LAYOUT.read_text())["keys"]
    return {k: torch.from_numpy(fixtures.deterministic_tensor(k, tuple(shape))) for k, shape in keys.items()}


def make_confident_model(seed: int = 0, num_classes: int = 19):
    """A seeded BiSeNetV2 (no aux heads, eval mode) whose logits are far from ties."""
    import torch

    from bisenet_rt.model import BiSeNetV2
    from bisenet_rt.model.reference import preprocess

    torch.manual_seed(seed)
    model = BiSeNetV2(num_classes, aux_heads=False)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.momentum = None  # cumulative average over the calibration batches
                m.reset_running_stats()
        frames = torch.from_numpy(np.stack([street_frame(256, 512, seed=s) for s in range(4)]))
        model.train()
        model(preprocess(frames, (512, 256)))
        model.eval()
        logits = model(preprocess(frames[:1], (512, 256)))
        model.head.conv_out[1].weight.mul_(4.0 / float(logits.std()))
        model.head.conv_out[1].bias.mul_(4.0 / float(logits.std()))
    return model


def post_only_graph(pipeline):
    """The post-processing of a pipeline graph on its own (`prepost.part_graph`) and the name of its logits input."""
    from bisenet_rt.graph.prepost import part_graph

    graph, (_, coarse) = part_graph(pipeline, "post")
    return graph, coarse


@pytest.fixture(scope="session")
def confident_model():
    return make_confident_model()


@pytest.fixture(scope="session")
def exported(tmp_path_factory, confident_model):
    """Pipeline graphs (fp32 in every post-processing form: 'fp32' is the default `resize`, 'fp32_<form>' the others;
    fp16) and the plain fp32 graph of `confident_model`, exported once."""
    from bisenet_rt.graph.export import ExportConfig, export_onnx

    out = tmp_path_factory.mktemp("onnx")
    paths = {}
    from bisenet_rt.post_form import PostForm

    configs = {"fp32": ExportConfig(), **{f"fp32_{form}": ExportConfig(post=form) for form in PostForm
                                          if form is not PostForm.RESIZE},
               "fp16": ExportConfig(precision="fp16"), "plain": ExportConfig(plain=True)}
    for key, config in configs.items():
        paths[key] = out / f"{key}.onnx"
        export_onnx(confident_model, paths[key], config)
    return paths


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, confident_model):
    """`confident_model` saved as a public-layout checkpoint."""
    from bisenet_rt.model import save_checkpoint

    return save_checkpoint(confident_model, tmp_path_factory.mktemp("ckpt") / "confident.pth")
