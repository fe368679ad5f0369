"""BiSeNetV2 (Yu et al., "BiSeNet V2: Bilateral Network with Guided Aggregation for Real-time
Semantic Segmentation", IJCV 2021), laid out key-for-key like the widely used public checkpoints.

Detail Branch (wide, shallow, 1/8) + Semantic Branch (Stem, Gather-and-Expansion layers, Context
Embedding, 1/32) -> Bilateral Guided Aggregation -> segment head. Four booster aux heads on the
semantic stages are used in training only. The BGA comes in the two variants the public checkpoint
families use (`families.BGAVariant`): nearest x4 upsampling and bias-free pointwise convs
(CoinCheung/BiSeNet), or bilinear upsampling and biased pointwise convs (MMSegmentation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..families import BGAUpsample, BGAVariant, CheckpointFamily, family_for_bga

__all__ = ["BiSeNetV2", "AUX_HEAD_NAMES", "BGAVariant", "BGAUpsample"]

#: Names of the booster heads, in the order `forward` returns them in training.
AUX_HEAD_NAMES: tuple[str, ...] = ("aux2", "aux3", "aux4", "aux5_4")
_EXPANSION = 6


class ConvBNReLU(nn.Module):
    """conv (no bias, 'same' padding) -> BN -> ReLU; keys `.conv`, `.bn`."""

    def __init__(self, in_ch: int, out_ch: int, k: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _conv_bn(in_ch: int, out_ch: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(out_ch)]


class DetailBranch(nn.Module):
    """VGG-like, no residuals: three stages, each starting with a stride-2 conv; output 1/8, 128 ch."""

    def __init__(self) -> None:
        super().__init__()
        self.S1 = nn.Sequential(ConvBNReLU(3, 64, 3, 2), ConvBNReLU(64, 64))
        self.S2 = nn.Sequential(ConvBNReLU(64, 64, 3, 2), ConvBNReLU(64, 64), ConvBNReLU(64, 64))
        self.S3 = nn.Sequential(ConvBNReLU(64, 128, 3, 2), ConvBNReLU(128, 128), ConvBNReLU(128, 128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.S3(self.S2(self.S1(x)))


class StemBlock(nn.Module):
    """Two ways of down-sampling (strided conv and max-pool) concatenated; output 1/4, 16 ch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = ConvBNReLU(3, 16, 3, 2)
        self.left = nn.Sequential(ConvBNReLU(16, 8, 1), ConvBNReLU(8, 16, 3, 2))
        self.right = nn.MaxPool2d(3, 2, 1)
        self.fuse = ConvBNReLU(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class ContextEmbedding(nn.Module):
    """Global average pool -> BN -> 1x1 CBR, broadcast-added to the input -> 3x3 CBR."""

    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv_gap = ConvBNReLU(channels, channels, 1)
        self.conv_last = ConvBNReLU(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gap = self.conv_gap(self.bn(torch.mean(x, dim=(2, 3), keepdim=True)))
        return self.conv_last(x + gap)


class GatherExpansionS1(nn.Module):
    """Stride-1 GE layer: 3x3 CBR, depthwise expansion x6, 1x1 projection, identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = channels * _EXPANSION
        self.conv1 = ConvBNReLU(channels, channels)
        self.dwconv = nn.Sequential(*_conv_bn(channels, mid, 3, groups=channels), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(*_conv_bn(mid, channels, 1))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.dwconv(self.conv1(x))) + x)


class GatherExpansionS2(nn.Module):
    """Stride-2 GE layer: two depthwise convs (the first strided) and a depthwise-separable shortcut."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = in_ch * _EXPANSION
        self.conv1 = ConvBNReLU(in_ch, in_ch)
        self.dwconv1 = nn.Sequential(*_conv_bn(in_ch, mid, 3, 2, groups=in_ch))
        self.dwconv2 = nn.Sequential(*_conv_bn(mid, mid, 3, groups=mid), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(*_conv_bn(mid, out_ch, 1))
        self.shortcut = nn.Sequential(*_conv_bn(in_ch, in_ch, 3, 2, groups=in_ch), *_conv_bn(in_ch, out_ch, 1))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.dwconv2(self.dwconv1(self.conv1(x))))
        return self.relu(y + self.shortcut(x))


class SemanticBranch(nn.Module):
    """Narrow and deep; returns the features of every stage (for the booster heads) and the 1/32 output."""

    def __init__(self) -> None:
        super().__init__()
        self.S1S2 = StemBlock()
        self.S3 = nn.Sequential(GatherExpansionS2(16, 32), GatherExpansionS1(32))
        self.S4 = nn.Sequential(GatherExpansionS2(32, 64), GatherExpansionS1(64))
        self.S5_4 = nn.Sequential(
            GatherExpansionS2(64, 128), GatherExpansionS1(128), GatherExpansionS1(128), GatherExpansionS1(128)
        )
        self.S5_5 = ContextEmbedding(128)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s2 = self.S1S2(x)
        s3 = self.S3(s2)
        s4 = self.S4(s3)
        s5_4 = self.S5_4(s4)
        return s2, s3, s4, s5_4, self.S5_5(s5_4)


class BilateralGuidedAggregation(nn.Module):
    """Each branch gates the other: detail x sigmoid(semantic) at 1/8, semantic x sigmoid(detail) at 1/32."""

    def __init__(self, channels: int = 128, variant: BGAVariant = BGAVariant()) -> None:
        super().__init__()
        c = channels
        bias = variant.pointwise_bias
        self.upsample = variant.upsample
        self.left1 = nn.Sequential(*_conv_bn(c, c, 3, groups=c), nn.Conv2d(c, c, 1, bias=bias))
        self.left2 = nn.Sequential(*_conv_bn(c, c, 3, 2), nn.AvgPool2d(3, 2, 1, ceil_mode=False))
        self.right1 = nn.Sequential(*_conv_bn(c, c, 3))
        self.right2 = nn.Sequential(*_conv_bn(c, c, 3, groups=c), nn.Conv2d(c, c, 1, bias=bias))
        self.conv = nn.Sequential(*_conv_bn(c, c, 3), nn.ReLU(inplace=True))

    def _up4(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample is BGAUpsample.BILINEAR:
            return F.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=False)
        return F.interpolate(x, scale_factor=4.0, mode="nearest")

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        left = self.left1(detail) * torch.sigmoid(self._up4(self.right1(semantic)))
        right = self._up4(self.left2(detail) * torch.sigmoid(self.right2(semantic)))
        return self.conv(left + right)


class SegmentHead(nn.Module):
    """3x3 CBR -> dropout -> 1x1 classifier -> bilinear upsample by `up_factor`.

    A booster head (`aux=True`) first upsamples x2 and widens to up_factor**2 channels, then
    upsamples the class scores by the remaining up_factor / 2, as the public checkpoints do.
    """

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int, up_factor: int, *, aux: bool) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch)
        self.drop = nn.Dropout(0.1)
        if aux:
            widened = up_factor * up_factor
            first: nn.Module = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"), ConvBNReLU(mid_ch, widened))
            self.up_factor = up_factor // 2
        else:
            widened = mid_ch
            first = nn.Identity()
            self.up_factor = up_factor
        self.conv_out = nn.Sequential(first, nn.Conv2d(widened, num_classes, 1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_out(self.drop(self.conv(x)))
        return F.interpolate(x, scale_factor=float(self.up_factor), mode="bilinear", align_corners=False)


class BiSeNetV2(nn.Module):
    """BiSeNetV2 for `num_classes` classes; input N x 3 x H x W normalized RGB, H and W multiples of 32.

    In `train()` mode `forward` returns `(logits, [aux2, aux3, aux4, aux5_4])`, every tensor
    N x C x H x W; in `eval()` mode (or without aux heads) it returns the logits alone and never
    runs the booster heads. `bga` picks the BGA variant; `family` (the checkpoint family whose
    normalization and protocol go with the weights) follows from it unless the loader sets it.
    """

    family: CheckpointFamily

    def __init__(self, num_classes: int = 19, *, aux_heads: bool = True, bga: BGAVariant = BGAVariant()) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
        if not isinstance(bga, BGAVariant):
            raise TypeError(f"bga must be a BGAVariant, got {type(bga).__name__}")
        self.num_classes = num_classes
        self.bga_variant = bga
        self.family = family_for_bga(bga)
        self.detail = DetailBranch()
        self.segment = SemanticBranch()
        self.bga = BilateralGuidedAggregation(128, bga)
        self.head = SegmentHead(128, 1024, num_classes, 8, aux=False)
        self.aux_heads = aux_heads
        if aux_heads:
            self.aux2 = SegmentHead(16, 128, num_classes, 4, aux=True)
            self.aux3 = SegmentHead(32, 128, num_classes, 8, aux=True)
            self.aux4 = SegmentHead(64, 128, num_classes, 16, aux=True)
            self.aux5_4 = SegmentHead(128, 128, num_classes, 32, aux=True)
        self.init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        detail = self.detail(x)
        s2, s3, s4, s5_4, semantic = self.segment(x)
        logits = self.head(self.bga(detail, semantic))
        if not (self.training and self.aux_heads):
            return logits
        aux = [head(feat) for head, feat in zip(self.booster_heads(), (s2, s3, s4, s5_4))]
        return logits, aux

    def booster_heads(self) -> list[SegmentHead]:
        """The four aux heads in the order of the semantic stages they read (empty without them)."""
        return [getattr(self, name) for name in AUX_HEAD_NAMES] if self.aux_heads else []

    def strip_aux_heads(self) -> "BiSeNetV2":
        """Remove the booster heads in place (they are training-only); returns self."""
        for name in AUX_HEAD_NAMES:
            if hasattr(self, name):
                delattr(self, name)
        self.aux_heads = False
        return self

    @torch.no_grad()
    def init_weights(self) -> None:
        """The paper's initialisation: kaiming-normal (fan_out) convs, BN 1/0, last BN of each GE layer 0.

        Zeroing the last BN of a GE layer makes each residual block start as the identity.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, (GatherExpansionS1, GatherExpansionS2)):
                bn = m.conv2[1]
                assert isinstance(bn, nn.BatchNorm2d)
                nn.init.zeros_(bn.weight)
