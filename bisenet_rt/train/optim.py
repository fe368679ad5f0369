"""Optimiser and schedule of the paper: SGD momentum 0.9, weight decay on conv weights only,
lr 5e-2 with a linear warm-up and poly(0.9) decay."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["param_groups", "build_optimizer", "WarmupPolyLR", "lr_factor", "aux_push"]


def param_groups(model: nn.Module, *, weight_decay: float, lr: float | None = None,
                 lr_mult: Mapping[str, float] | None = None) -> list[dict]:
    """SGD groups: conv weights (decayed) and everything else, BN affine and biases (not decayed).

    Decaying BN scales and biases only shrinks them towards zero without regularising anything
    useful, which is why the paper restricts weight decay to the convolution kernels. `lr_mult`
    maps child-module names (e.g. the aux heads) to a multiple of `lr` for their own two groups.
    """
    lr_mult = dict(lr_mult or {})
    if lr_mult and lr is None:
        raise ConfigError("lr_mult needs the base lr")
    owner = {id(param): name for name in lr_mult for param in getattr(model, name).parameters()}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad:
                is_conv_weight = isinstance(module, nn.modules.conv._ConvNd) and name == "weight"
                groups.setdefault((owner.get(id(param), ""), is_conv_weight), []).append(param)
    out = [{"params": groups.get(("", True), []), "weight_decay": weight_decay, "name": "conv_weights"},
           {"params": groups.get(("", False), []), "weight_decay": 0.0, "name": "no_decay"}]
    for child in lr_mult:
        assert lr is not None  # checked above
        out += [{"params": groups.get((child, decayed), []), "weight_decay": weight_decay if decayed else 0.0,
                 "lr": lr * lr_mult[child], "name": f"{child}.{'conv_weights' if decayed else 'no_decay'}"}
                for decayed in (True, False)]
    return out


def build_optimizer(model: nn.Module, *, lr: float = 5e-2, momentum: float = 0.9, weight_decay: float = 5e-4,
                    lr_mult: Mapping[str, float] | None = None) -> torch.optim.SGD:
    """SGD with momentum over `param_groups(model)`; `lr_mult` gives named children a multiple of `lr`."""
    if lr <= 0:
        raise ConfigError(f"lr must be positive, got {lr}")
    return torch.optim.SGD(param_groups(model, weight_decay=weight_decay, lr=lr, lr_mult=lr_mult), lr=lr,
                           momentum=momentum)


def lr_factor(iteration: int, *, max_iters: int, warmup_iters: int, warmup_ratio: float = 0.1,
              power: float = 0.9) -> float:
    """Multiplier of the base lr before step `iteration` (0-based).

    Linear from `warmup_ratio` to 1 over the warm-up, then (1 - t)^power where t runs from 0 to 1
    over the remaining iterations, so the two pieces meet at 1.
    """
    if iteration < warmup_iters:
        return warmup_ratio + (1.0 - warmup_ratio) * iteration / warmup_iters
    span = max(1, max_iters - warmup_iters)
    t = min(1.0, (iteration - warmup_iters) / span)
    return (1.0 - t) ** power


class WarmupPolyLR(torch.optim.lr_scheduler.LRScheduler):
    """Linear warm-up then poly decay, stepped once per iteration; state_dict/load_state_dict resume it."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, max_iters: int, warmup_iters: int = 0,
                 warmup_ratio: float = 0.1, power: float = 0.9, last_epoch: int = -1) -> None:
        if max_iters < 1:
            raise ConfigError(f"max_iters must be at least 1, got {max_iters}")
        if not 0 <= warmup_iters <= max_iters:
            raise ConfigError(f"warmup_iters must be in [0, max_iters={max_iters}], got {warmup_iters}")
        self.max_iters = max_iters
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | torch.Tensor]:
        factor = lr_factor(self.last_epoch, max_iters=self.max_iters, warmup_iters=self.warmup_iters,
                           warmup_ratio=self.warmup_ratio, power=self.power)
        return [base * factor for base in self.base_lrs]


def aux_push(iteration: int, *, head_start: int) -> float:
    """Share of the aux heads' gradient that reaches the network before step `iteration` (0-based).

    None during the head start (the heads learn alone), then rising linearly over as many iterations
    again to all of it; all of it from the first step without a head start.
    """
    if head_start <= 0:
        return 1.0
    return min(1.0, max(0.0, (iteration - head_start + 1) / head_start))
