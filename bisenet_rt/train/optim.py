"""Optimiser and schedule of the paper: SGD momentum 0.9, weight decay on conv weights only,
lr 5e-2 with a linear warm-up and poly(0.9) decay."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["param_groups", "build_optimizer", "WarmupPolyLR", "lr_factor"]


def param_groups(model: nn.Module, *, weight_decay: float) -> list[dict]:
    """Two SGD groups: conv weights (decayed) and everything else, BN affine and biases (not decayed).

    Decaying BN scales and biases only shrinks them towards zero without regularising anything
    useful, which is why the paper restricts weight decay to the convolution kernels.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            is_conv_weight = isinstance(module, nn.modules.conv._ConvNd) and name == "weight"
            (decay if is_conv_weight else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay, "name": "conv_weights"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]


def build_optimizer(model: nn.Module, *, lr: float = 5e-2, momentum: float = 0.9,
                    weight_decay: float = 5e-4) -> torch.optim.SGD:
    """SGD with momentum over `param_groups(model)`."""
    if lr <= 0:
        raise ConfigError(f"lr must be positive, got {lr}")
    return torch.optim.SGD(param_groups(model, weight_decay=weight_decay), lr=lr, momentum=momentum)


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
