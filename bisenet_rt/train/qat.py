"""Quantization-aware fine-tuning: teach the model the int8 activations its INT8 build will run with.

Post-training quantization (`bisenet_rt.graph.qdq`) rounds every activation to a per-tensor int8 grid;
pixels the float model is unsure of then change class. Fine-tuning with the same rounding simulated
(fake quantization, gradients passed straight through) lets the weights adapt to it. The fine-tune
runs each batch twice: the float pass learns the ground truth, the fake-quantized pass learns to
give the float pass's labels (OHEM cross-entropy on both, so the effort goes to the pixels either
is unsure of), because an INT8 build is judged by how often it labels as the float model of the same
weights does. (Training the int8 pass on the ground truth instead would pull it away from the float
model wherever that one is wrong.)

Where the rounding happens follows the Q/DQ graph `quantize` produces: after every ReLU, after a
batch norm or conv whose output is not followed by a ReLU, after pooling, and at every conv input
(covering the tensors made by additions, products, concatenation and resizing); the classifier's
output (the logits) stays float, and so does everything in `FLOAT_STAGE`. Conv weights are rounded per
output channel to their int8 grid after the following batch norm is folded in, as in the exported graph
(the fine-tune keeps batch-norm statistics frozen, so the folding is fixed). Activation ranges are
symmetric and end at the percentile of |activation| the calibration uses (`SEMANTIC_PERCENTILE` in the
semantic branch, `PERCENTILE` elsewhere): measured on full frames first, then followed with a moving
average of each batch's percentile.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch
from torch import nn

from ..classes import IGNORE_INDEX
from ..graph.qdq import FLOAT_STAGE
from ..graph.calibration import PERCENTILE, SEMANTIC_BRANCH, SEMANTIC_PERCENTILE

__all__ = ["Int8FakeQuant", "float_labels"]

#: Symmetric int8 grid of the activations (zero point 0, codes -127..127), as ORT's symmetric quantizer uses.
_QMAX = 127
#: Values of a tensor the percentile of a batch is taken from (a strided subsample beyond this).
_SAMPLE = 1 << 20
#: Values of each tensor of each calibration frame kept for the pooled percentile.
_CALIB_SAMPLE = 1 << 16
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)
#: Default weight of the int8 pass's loss against the float pass's. On the demo model a run at 1 reached
#: 97.3% of pixels labelled as FP32, a following run at 2 98.6%, and a third at 3 no more (98.5%).
INT8_LOSS_WEIGHT = 2.0


def _subsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """|x| flattened, every k-th value so that at most about `size` remain."""
    flat = x.detach().flatten()
    return flat[:: max(1, flat.numel() // size)].abs().float()


def _percentile_for(key: str) -> float:
    """The calibration percentile of a quantization point: the semantic branch's or the default."""
    return SEMANTIC_PERCENTILE if key.startswith(f"{SEMANTIC_BRANCH}.") else PERCENTILE


def _percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The q-th percentile of a 1-D tensor."""
    k = max(1, min(values.numel(), int(round(values.numel() * q / 100.0))))
    return values.kthvalue(k).values



def _running_var(bn: nn.BatchNorm2d) -> torch.Tensor:
    """The BN's running variance (the models here always track running statistics)."""
    assert bn.running_var is not None
    return bn.running_var

class Int8FakeQuant:
    """Fake int8 quantization of a BiSeNetV2's activations and conv weights (hooks); off until `enabled` is set.

    `calibrate(batches)` sets every range from float passes over normalized frames; while `enabled`
    and the model trains (`observe`), each pass also moves the ranges toward the batch's percentile
    (`momentum` keeps that much of the old range). `remove()` takes the hooks off again.
    """

    def __init__(self, model: nn.Module, *, keep_float: Iterable[nn.Module] = (), momentum: float = 0.9) -> None:
        self.enabled = False
        self.observe = True
        self.momentum = momentum
        self.amax: dict[str, torch.Tensor] = {}
        self._samples: dict[str, list[torch.Tensor]] | None = None
        self._handles: list[Any] = []
        self._convs: list[nn.Conv2d] = []
        keep = {id(m) for m in keep_float}
        for name, module, after in self._points(model):
            if name.startswith(f"{FLOAT_STAGE}."):
                continue
            if isinstance(module, nn.Conv2d):
                self._handles.append(module.register_forward_pre_hook(self._input_hook(name + ":in")))
                module.forward = self._conv_forward(  # type: ignore[method-assign]  # per-instance override
module, after if isinstance(after, nn.BatchNorm2d) else None)
                self._convs.append(module)
            followed = ((isinstance(module, nn.Conv2d) and isinstance(after, nn.BatchNorm2d))
                        or (isinstance(module, nn.BatchNorm2d) and isinstance(after, nn.ReLU)))
            if not followed and id(module) not in keep:
                self._handles.append(module.register_forward_hook(self._output_hook(name)))

    @staticmethod
    def _points(model: nn.Module) -> Iterator[tuple[str, nn.Module, nn.Module | None]]:
        """(name, module, the module run after it) for every conv, batch norm, ReLU and pool of the model."""
        for parent_name, parent in model.named_modules():
            children = list(parent.named_children())
            for i, (name, module) in enumerate(children):
                if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU) + _POOLS):
                    after = children[i + 1][1] if i + 1 < len(children) else None
                    yield f"{parent_name}.{name}" if parent_name else name, module, after

    def _conv_forward(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None):
        """The conv's forward, with its BN-folded weights on the per-channel int8 grid while enabled."""
        def forward(x: torch.Tensor) -> torch.Tensor:
            weight = conv.weight
            if self.enabled and self._samples is None:
                fold = torch.ones(weight.shape[0], device=weight.device) if bn is None else (
                    bn.weight / torch.sqrt(_running_var(bn) + bn.eps))
                fold = torch.where(fold == 0, torch.ones_like(fold), fold)  # a dead channel: nothing to fold
                folded = weight * fold.view(-1, 1, 1, 1)
                scale = (folded.detach().abs().amax(dim=(1, 2, 3)) / _QMAX).clamp_min(1e-12).float()
                zero = torch.zeros_like(scale, dtype=torch.int32)
                weight = torch.fake_quantize_per_channel_affine(folded, scale, zero, 0, -_QMAX, _QMAX)
                weight = weight / fold.view(-1, 1, 1, 1)
            return conv._conv_forward(x, weight, conv.bias)
        return forward

    def _quantize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        if getattr(x, "_fake_quantized", False):
            return x
        if self._samples is not None:
            self._samples.setdefault(key, []).append(_subsample(x, _CALIB_SAMPLE))
            return x
        if not self.enabled:
            return x
        amax = self.amax.get(key)
        if amax is None or (self.observe and torch.is_grad_enabled()):
            batch = _percentile(_subsample(x, _SAMPLE), _percentile_for(key))
            amax = batch if amax is None else self.momentum * amax + (1.0 - self.momentum) * batch
            self.amax[key] = amax
        scale = float(amax.clamp_min(1e-8)) / _QMAX
        out = torch.fake_quantize_per_tensor_affine(x.float(), scale, 0, -_QMAX, _QMAX).to(x.dtype)
        setattr(out, "_fake_quantized", True)  # marks what this hook produced (read by the next hook)
        return out

    def _input_hook(self, key: str):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (self._quantize(key, args[0]), *args[1:])
        return hook

    def _output_hook(self, key: str):
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            return self._quantize(key, output)
        return hook

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor], model: nn.Module) -> int:
        """Set every range from float passes over `batches` (normalized N x 3 x H x W); returns their count.

        Each range is the percentile of |activation| over all batches pooled, as ORT's calibrator takes it.
        """
        self._samples = {}
        count = 0
        try:
            for x in batches:
                model(x)
                count += 1
            samples = self._samples
        finally:
            self._samples = None
        self.amax = {key: _percentile(torch.cat(values), _percentile_for(key)) for key, values in samples.items()}
        return count

    def remove(self) -> None:
        """Take the hooks off the model."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for conv in self._convs:
            del conv.forward  # back to the class's forward
        self._convs.clear()


def float_labels(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The float pass's arg-max as the int8 pass's target, ignored where the ground truth is (crop padding)."""
    target = logits.detach().argmax(1)
    return torch.where(labels == IGNORE_INDEX, labels, target)
