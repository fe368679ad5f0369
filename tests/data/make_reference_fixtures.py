"""Make the reference fixtures: logits of the real MMSegmentation and CoinCheung/BiSeNet models.

How they were made (a scratch environment outside the repository; bisenet_rt is not needed):

    python3 -m venv /tmp/mmseg-venv
    /tmp/mmseg-venv/bin/pip install torch==2.13.0 mmsegmentation==1.2.2 mmengine==0.10.7 mmcv-lite==2.1.0 ftfy regex
    git clone https://github.com/CoinCheung/BiSeNet /tmp/BiSeNet
    git -C /tmp/BiSeNet checkout 6b4b67a8e3eb0cc23b3d7a94843a7c3c11dedca8
    /tmp/mmseg-venv/bin/python tests/data/make_reference_fixtures.py --coincheung /tmp/BiSeNet

(torch 2.13.0+cpu, numpy 2.4.6, mmsegmentation 1.2.2, mmengine 0.10.7, mmcv-lite 2.1.0: mmseg 1.2.2 refuses
mmcv 2.2; ftfy and regex are imported by mmseg.utils. The CoinCheung files came from a mirror of that
commit: `git archive 6b4b67a8 lib configs`.) Running it again rewrites identical files. mmcv-lite has no compiled `mmcv.ops`; nothing in
BiSeNetV2, FCNHead or the data pre-processor uses it, so `mmcv.ops` is replaced by a stub module whose
members raise if they are ever built.

The script builds MMSeg's own model from its own config
(`configs/bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py`, SyncBN replaced by BN to run on one
CPU) with MMSeg's registry, fills every entry of its state dict (auxiliary heads included) with
`deterministic_tensor(key, shape)` (seeded by the key name only, so the test rebuilds the same checkpoint
from the layout file without MMSeg), and writes:

- `mmseg_bisenetv2_layout.json`: every key of the real model's state dict with its shape and dtype;
- `mmseg_reference.npz`: `frame`, a deterministic 64x32 BGR uint8 frame, and `logits`, the 1 x 19 x 32 x 64
  scores MMSeg computes for it: its `SegDataPreProcessor` (BGR -> RGB, its mean/std), then
  `EncoderDecoder.inference` (whole-image test mode, logits resized to the frame bilinearly).

For CoinCheung/BiSeNet (commit 6b4b67a8e3eb), its `lib/models/bisenetv2.py` and
`lib/data/transform_cv2.py` are loaded from the checkout; its model's state dict (booster heads
included) must have exactly the keys and shapes of `bisenetv2_state_dict_layout.json`; it is filled the
same way (its constructor's download of pretrained backbone weights is skipped: every weight is
overwritten), and `coincheung_reference.npz` holds the same frame and the logits of its `tools/demo.py`
steps: BGR -> RGB, its `ToTensor` with the mean/std demo.py passes, the model in `aux_mode="eval"`.

tests/test_families.py writes the filled state dicts as checkpoint files (MMSeg's as
`{"meta": ..., "state_dict": ...}`), loads them with `bisenet_rt.model.load_checkpoint` and compares.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LAYOUT = HERE / "mmseg_bisenetv2_layout.json"
REFERENCE = HERE / "mmseg_reference.npz"
COINCHEUNG_LAYOUT = HERE / "bisenetv2_state_dict_layout.json"
COINCHEUNG_REFERENCE = HERE / "coincheung_reference.npz"
#: The mean/std CoinCheung's tools/demo.py passes to its ToTensor (RGB, after /255).
_COINCHEUNG_MEAN, _COINCHEUNG_STD = (0.3257, 0.3690, 0.3223), (0.2112, 0.2148, 0.2115)
FRAME_SIZE = (64, 32)  # (w, h): both multiples of 32, not square
_CONFIG = "configs/bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py"


def deterministic_tensor(key: str, shape: tuple[int, ...]) -> np.ndarray:
    """A well-conditioned value for state-dict entry `key`, from a generator seeded by the key name alone.

    numpy's legacy RandomState stream is frozen, so the values do not depend on versions.
    """
    rng = np.random.RandomState(zlib.crc32(key.encode()))
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return np.zeros(shape, np.int64)
    if leaf == "running_var":
        return rng.uniform(0.5, 2.0, shape).astype(np.float32)
    if leaf == "running_mean" or leaf == "bias":
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    if len(shape) == 1:  # BatchNorm scale
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def deterministic_frame() -> np.ndarray:
    """A 64x32 BGR uint8 frame: smooth colour ramps plus noise, so every channel and position differs."""
    w, h = FRAME_SIZE
    rng = np.random.RandomState(2026)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ramps = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], axis=-1) * 200.0
    return np.clip(ramps + rng.uniform(0, 55, (h, w, 3)), 0, 255).astype(np.uint8)


def _stub_mmcv_ops() -> None:
    """Stand in for mmcv-lite's missing compiled ops (imported by mmseg, used by none of these modules)."""
    ops = types.ModuleType("mmcv.ops")
    ops.__path__ = []

    def missing(name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)

        def refuse(self, *args, **kwargs):
            raise RuntimeError(f"mmcv.ops.{name} is a stub in this scratch environment")

        return type(name, (), {"__init__": refuse})

    ops.__getattr__ = missing
    sys.modules["mmcv.ops"] = ops


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_coincheung(checkout: Path) -> None:
    """CoinCheung/BiSeNet's own model and preprocessing on the deterministic weights and frame."""
    import torch

    models = _load_file("coincheung_bisenetv2", checkout / "lib" / "models" / "bisenetv2.py")
    transforms = _load_file("coincheung_transform_cv2", checkout / "lib" / "data" / "transform_cv2.py")
    models.BiSeNetV2.load_pretrain = lambda self: None  # downloads backbone weights; all are overwritten below
    net = models.BiSeNetV2(19, aux_mode="train")
    state = net.state_dict()
    layout = json.loads(COINCHEUNG_LAYOUT.read_text())["keys"]
    if {k: list(v.shape) for k, v in state.items()} != layout:
        raise SystemExit(f"CoinCheung's state dict differs from {COINCHEUNG_LAYOUT.name}")
    net.load_state_dict({k: torch.from_numpy(deterministic_tensor(k, tuple(v.shape))) for k, v in state.items()})
    net.aux_mode = "eval"
    net.eval()
    frame = deterministic_frame()
    to_tensor = transforms.ToTensor(mean=_COINCHEUNG_MEAN, std=_COINCHEUNG_STD)
    with torch.no_grad():
        im = to_tensor(dict(im=frame[:, :, ::-1], lb=None))["im"].unsqueeze(0)
        logits = net(im)[0].numpy().astype(np.float32)
    np.savez_compressed(COINCHEUNG_REFERENCE, frame=frame, logits=logits)
    print(f"CoinCheung/BiSeNet: {len(state)} keys; logits {logits.shape}, |max| {np.abs(logits).max():.3g}")


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--coincheung", type=Path, required=True, help="checkout of CoinCheung/BiSeNet")
    args = parser.parse_args()
    make_coincheung(args.coincheung)
    _stub_mmcv_ops()
    import mmseg
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(str(Path(mmseg.__file__).parent / ".mim" / _CONFIG))
    model_cfg = cfg.model
    model_cfg.decode_head.norm_cfg = dict(type="BN", requires_grad=True)
    for aux in model_cfg.auxiliary_head:
        aux.norm_cfg = dict(type="BN", requires_grad=True)
    model = MODELS.build(model_cfg).eval()

    state = model.state_dict()
    filled = {k: torch.from_numpy(deterministic_tensor(k, tuple(v.shape))) for k, v in state.items()}
    model.load_state_dict(filled, strict=True)
    layout = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in state.items()]
    LAYOUT.write_text(json.dumps({"source": f"mmsegmentation {mmseg.__version__}, {_CONFIG}", "keys": layout},
                                 indent=0) + "\n")

    frame = deterministic_frame()
    w, h = FRAME_SIZE
    with torch.no_grad():
        data = model.data_preprocessor({"inputs": [torch.from_numpy(frame).permute(2, 0, 1).contiguous()]},
                                       training=False)
        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))
        logits = model.inference(data["inputs"], [meta]).numpy().astype(np.float32)
    np.savez_compressed(REFERENCE, frame=frame, logits=logits)
    non_aux = sum(1 for k in state if not k.startswith("auxiliary_head."))
    print(f"torch {torch.__version__}, mmseg {mmseg.__version__}: {len(state)} keys ({non_aux} without the "
          f"auxiliary heads); logits {logits.shape}, |max| {np.abs(logits).max():.3g}, std {logits.std():.3g}")


if __name__ == "__main__":
    main()
