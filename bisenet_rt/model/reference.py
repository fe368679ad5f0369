"""The reference in PyTorch: the oracle every exported graph and backend is compared with.

BGR uint8 frames -> the model's colour order, mean/std of its checkpoint family -> bilinear resize to
the model size -> BiSeNetV2 -> bilinear upsample of the logits to the frame size -> arg-max -> uint8 labels.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..classes import DEFAULT_MODEL_SIZE
from ..families import DEFAULT_FAMILY, ChannelOrder, Normalization, family_of

if TYPE_CHECKING:
    import torch

__all__ = ["preprocess", "postprocess", "reference_logits", "reference_labels"]


def preprocess(frames: "torch.Tensor", model_size: tuple[int, int] = DEFAULT_MODEL_SIZE,
               normalization: Normalization = DEFAULT_FAMILY.normalization) -> "torch.Tensor":
    """uint8 N x H x W x 3 BGR -> float N x 3 x h x w at model_size (w, h), normalized as `normalization` says."""
    import torch
    import torch.nn.functional as F

    x = frames.permute(0, 3, 1, 2)
    if normalization.order is ChannelOrder.RGB:
        x = x.flip(1)
    x = x.float()
    if normalization.value_range != 255.0:
        x = x.div(255.0 / normalization.value_range)
    mean = torch.tensor(normalization.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(normalization.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    w, h = model_size
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=False)


def postprocess(logits: "torch.Tensor", frame_hw: tuple[int, int]) -> "torch.Tensor":
    """N x C x h x w logits -> N x H x W uint8 labels: bilinear upsample to frame_hw, then arg-max."""
    import torch
    import torch.nn.functional as F

    up = F.interpolate(logits.float(), size=frame_hw, mode="bilinear", align_corners=False)
    return up.argmax(dim=1).to(dtype=torch.uint8)


def reference_logits(model: "torch.nn.Module", frames: "torch.Tensor",
                     model_size: tuple[int, int] = DEFAULT_MODEL_SIZE) -> "torch.Tensor":
    """Model logits at the model size for uint8 BGR frames (eval mode, no grad), normalized for its family."""
    import torch

    with torch.inference_mode():
        param = next(model.parameters())
        x = preprocess(frames.to(param.device), model_size, family_of(model).normalization).to(param.dtype)
        return model(x)


def reference_labels(model: "torch.nn.Module", frames: "torch.Tensor",
                     model_size: tuple[int, int] = DEFAULT_MODEL_SIZE) -> "torch.Tensor":
    """The whole reference: uint8 N x H x W x 3 BGR frames -> uint8 N x H x W labels."""
    import torch

    with torch.inference_mode():
        return postprocess(reference_logits(model, frames, model_size), (frames.shape[1], frames.shape[2]))
