"""A minimal PyTorch definition of BiSeNetV1 and BiSeNetV2 in the layout the PyTorch world uses.

Written from the structure facts in ``REFERENCE.md`` sections 1-2 so that a user without any other
repository can load a state_dict exported by :func:`bisenet_jax.convert.to_torch_state_dict` and
run it (or export it to ONNX). ``state_dict()`` of the training-mode models has exactly the keys and
shapes of ``../shared/docs/reference/pytorch_bisenetv{1,2}_state_dict.txt``, ``num_batches_tracked``
included. It is also the eager PyTorch reference of the speed and training benchmarks.

Inputs are NCHW float tensors (normalised RGB). ``model.eval()``: ``forward`` returns the logits
(N, C, H, W) at the input size. ``model.train()``: ``(logits, [aux logits ...])``, the auxiliary
list empty when the model was built with ``aux_heads=False``.

Resizing follows the Flax models exactly: integer-factor nearest upsampling repeats pixels (the
PyTorch reference's ``Upsample(scale_factor=2)``); where a side is not a multiple of 32 the
upsampled feature is resized to the skip feature's exact size with half-pixel nearest sampling;
the heads resize bilinearly (``align_corners=False``) straight to the input size.

torch is imported here only: ``import bisenet_jax.convert`` does not import it.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BiSeNetV1", "BiSeNetV2", "ConvBNReLU", "ResNet", "Xception39", "build_torch_model", "build_torchvision_resnet",
]

# -------------------------------------------------------------------------------------------------
# Shared pieces
# -------------------------------------------------------------------------------------------------


class ConvBNReLU(nn.Module):
    """conv (no bias, padding k//2) -> ``bn`` -> ReLU (or nothing with ``relu=False``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
          bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)


def upsample_nearest(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest resize to ``size``: pixel repetition at integer factors, half-pixel sampling otherwise."""
    h, w = x.shape[-2:]
    out_h, out_w = int(size[0]), int(size[1])
    if (h, w) == (out_h, out_w):
        return x
    if out_h % h == 0 and out_w % w == 0:
        return F.interpolate(x, size=(out_h, out_w), mode="nearest")
    return F.interpolate(x, size=(out_h, out_w), mode="nearest-exact")


def upsample_bilinear(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with half-pixel centres (``align_corners=False``), no antialiasing."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 1, 1)."""
    return x.mean(dim=(2, 3), keepdim=True)


# -------------------------------------------------------------------------------------------------
# torchvision-structured ResNets
# -------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = _conv(in_channels, width, 3, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv(width, width, 3)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (the stride is on the 3x3 conv), as in torchvision."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = _conv(in_channels, width, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv(width, width, 3, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv(width, out_channels, 1)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(_conv(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))


RESNET_STAGES = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
                 50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3))}


class ResNet(nn.Module):
    """torchvision's ResNet names and structure; ``forward`` returns the (1/8, 1/16, 1/32) features.

    With ``num_classes`` set it also has torchvision's ``fc`` (so its ``state_dict`` is an ImageNet
    checkpoint's layout) and :meth:`classify`; BiSeNet's context path has no classifier.
    """

    def __init__(self, depth: int = 18, num_classes: int | None = None):
        super().__init__()
        if depth not in RESNET_STAGES:
            raise ValueError(f"ResNet depth {depth} is not supported; expected one of {sorted(RESNET_STAGES)}")
        block, stage_sizes = RESNET_STAGES[depth]
        self.conv1 = _conv(3, 64, 7, 2)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = 64
        for k, (num_blocks, width) in enumerate(zip(stage_sizes, (64, 128, 256, 512))):
            blocks = []
            for i in range(num_blocks):
                blocks.append(block(in_channels, width, (1 if k == 0 else 2) if i == 0 else 1))
                in_channels = width * block.expansion
            setattr(self, f"layer{k + 1}", nn.Sequential(*blocks))
        self.out_channels = tuple(w * block.expansion for w in (128, 256, 512))
        if num_classes is not None:
            self.fc = nn.Linear(512 * block.expansion, num_classes)
        _init_resnet(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        x = self.layer1(x)
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        feat32 = self.layer4(feat16)
        return feat8, feat16, feat32

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (only with ``num_classes``)."""
        return self.fc(torch.flatten(spatial_mean(self(x)[-1]), 1))


def build_torchvision_resnet(depth: int, num_classes: int = 1000) -> ResNet:
    """A ResNet whose ``state_dict`` has torchvision's ImageNet layout (``conv1`` ... ``fc``)."""
    return ResNet(depth, num_classes)


# -------------------------------------------------------------------------------------------------
# Xception39 (names are bisenet_jax's: there is no PyTorch layout to match)
# -------------------------------------------------------------------------------------------------

XCEPTION39_STAGES = ((4, 16), (8, 32), (4, 64))


class SeparableConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, relu: bool = True):
        super().__init__()
        self.depthwise = _conv(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pointwise = ConvBNReLU(in_channels, out_channels, 1, relu=relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    def __init__(self, in_channels: int, mid: int, stride: int = 1, project: bool = False):
        super().__init__()
        self.sep1 = SeparableConv(in_channels, mid, stride)
        self.sep2 = SeparableConv(mid, mid)
        self.sep3 = SeparableConv(mid, 4 * mid, relu=False)
        self.shortcut = SeparableConv(in_channels, 4 * mid, stride, relu=False) if project else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.sep3(self.sep2(self.sep1(x)))
        return self.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class Xception39(nn.Module):
    """Returns the (1/8, 1/16, 1/32) features with 64, 128 and 256 channels."""

    def __init__(self):
        super().__init__()
        self.conv1 = ConvBNReLU(3, 8, 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = 8
        for k, (num_blocks, mid) in enumerate(XCEPTION39_STAGES):
            blocks = [XceptionBlock(in_channels if i == 0 else 4 * mid, mid, 2 if i == 0 else 1, i == 0)
                      for i in range(num_blocks)]
            setattr(self, f"layer{k + 1}", nn.Sequential(*blocks))
            in_channels = 4 * mid
        self.out_channels = tuple(4 * mid for _, mid in XCEPTION39_STAGES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.conv1(x))
        feat8 = self.layer1(x)
        feat16 = self.layer2(feat8)
        return feat8, feat16, self.layer3(feat16)


# -------------------------------------------------------------------------------------------------
# BiSeNetV1
# -------------------------------------------------------------------------------------------------


class SpatialPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = ConvBNReLU(3, 64, 7, 2)
        self.conv2 = ConvBNReLU(64, 64, 3, 2)
        self.conv3 = ConvBNReLU(64, 64, 3, 2)
        self.conv_out = ConvBNReLU(64, 128, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv3(self.conv2(self.conv1(x))))  # (N, 128, H/8, W/8)


class AttentionRefinement(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 3)
        self.conv_atten = _conv(out_channels, out_channels, 1)
        self.bn_atten = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(spatial_mean(feat))))


class ContextPath(nn.Module):
    """Backbone + ARMs + global context; returns (context_1_8, context_1_16), 128 channels each."""

    def __init__(self, backbone: str = "resnet18"):
        super().__init__()
        if backbone.startswith("resnet"):
            self.resnet = ResNet(int(backbone[len("resnet"):]))
            channels = self.resnet.out_channels
        elif backbone == "xception39":
            self.xception = Xception39()
            channels = self.xception.out_channels
        else:
            raise ValueError(f"unknown BiSeNetV1 backbone {backbone!r}; expected resnet18/34/50/101 or xception39")
        self.backbone_name = backbone
        self.arm16 = AttentionRefinement(channels[1], 128)
        self.arm32 = AttentionRefinement(channels[2], 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3)
        self.conv_head16 = ConvBNReLU(128, 128, 3)
        self.conv_avg = ConvBNReLU(channels[2], 128, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        backbone = self.resnet if self.backbone_name.startswith("resnet") else self.xception
        feat8, feat16, feat32 = backbone(x)
        global_context = self.conv_avg(spatial_mean(feat32))  # (N, 128, 1, 1)
        feat32_sum = self.arm32(feat32) + global_context
        context_1_16 = self.conv_head32(upsample_nearest(feat32_sum, feat16.shape[-2:]))
        feat16_sum = self.arm16(feat16) + context_1_16
        context_1_8 = self.conv_head16(upsample_nearest(feat16_sum, feat8.shape[-2:]))
        return context_1_8, context_1_16


class FeatureFusion(nn.Module):
    def __init__(self, in_channels: int = 256, out_channels: int = 256):
        super().__init__()
        self.convblk = ConvBNReLU(in_channels, out_channels, 1)
        self.conv = _conv(out_channels, out_channels, 1)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        context = upsample_nearest(context, spatial.shape[-2:])
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        attention = torch.sigmoid(self.bn(self.conv(spatial_mean(feat))))
        return feat * attention + feat


class BiSeNetOutput(nn.Module):
    """``conv`` ConvBNReLU 3x3 -> ``conv_out`` 1x1 with bias -> bilinear to ``out_size``."""

    def __init__(self, in_channels: int, mid: int, num_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, mid, 3)
        self.conv_out = nn.Conv2d(mid, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
        return upsample_bilinear(self.conv_out(self.conv(x)), out_size)


class BiSeNetV1(nn.Module):
    """BiSeNetV1 with the ``sp`` / ``cp`` / ``ffm`` / ``conv_out*`` layout of the PyTorch checkpoints."""

    def __init__(self, num_classes: int, backbone: str = "resnet18", head_mid: int = 256, aux_mid: int = 64,
                 aux_heads: bool = True):
        super().__init__()
        self.cp = ContextPath(backbone)
        self.sp = SpatialPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = BiSeNetOutput(256, head_mid, num_classes)
        self.aux_heads = aux_heads
        if aux_heads:
            self.conv_out16 = BiSeNetOutput(128, aux_mid, num_classes)
            self.conv_out32 = BiSeNetOutput(128, aux_mid, num_classes)
        _init_bisenetv1(self)

    def forward(self, x: torch.Tensor):
        out_size = x.shape[-2:]
        context_1_8, context_1_16 = self.cp(x)
        fused = self.ffm(self.sp(x), context_1_8)
        logits = self.conv_out(fused, out_size)
        if not self.training:
            return logits
        aux = [self.conv_out16(context_1_8, out_size), self.conv_out32(context_1_16, out_size)] if self.aux_heads else []
        return logits, aux


# -------------------------------------------------------------------------------------------------
# BiSeNetV2
# -------------------------------------------------------------------------------------------------


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
             relu: bool = False) -> nn.Sequential:
    """Sequential(conv ``0``, BN ``1`` [, ReLU ``2``])."""
    layers = [_conv(in_channels, out_channels, kernel_size, stride, groups), nn.BatchNorm2d(out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DetailBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.S1 = nn.Sequential(ConvBNReLU(3, 64, 3, 2), ConvBNReLU(64, 64, 3))
        self.S2 = nn.Sequential(ConvBNReLU(64, 64, 3, 2), ConvBNReLU(64, 64, 3), ConvBNReLU(64, 64, 3))
        self.S3 = nn.Sequential(ConvBNReLU(64, 128, 3, 2), ConvBNReLU(128, 128, 3), ConvBNReLU(128, 128, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.S3(self.S2(self.S1(x)))  # (N, 128, H/8, W/8)


class StemBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = ConvBNReLU(3, 16, 3, 2)
        self.left = nn.Sequential(ConvBNReLU(16, 8, 1), ConvBNReLU(8, 16, 3, 2))
        self.right = nn.MaxPool2d(3, 2, 1)
        self.fuse = ConvBNReLU(32, 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))  # (N, 16, H/4, W/4)


class GatherExpandS1(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, expansion: int = 6):
        super().__init__()
        mid = in_channels * expansion
        self.conv1 = ConvBNReLU(in_channels, in_channels, 3)
        self.dwconv = _conv_bn(in_channels, mid, 3, groups=in_channels, relu=True)
        self.conv2 = _conv_bn(mid, out_channels, 1)
        self.conv2[1].last_bn = True  # gamma initialised to 0
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.dwconv(self.conv1(x))) + x)


class GatherExpandS2(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, expansion: int = 6):
        super().__init__()
        mid = in_channels * expansion
        self.conv1 = ConvBNReLU(in_channels, in_channels, 3)
        self.dwconv1 = _conv_bn(in_channels, mid, 3, 2, groups=in_channels)
        self.dwconv2 = _conv_bn(mid, mid, 3, groups=mid, relu=True)
        self.conv2 = _conv_bn(mid, out_channels, 1)
        self.conv2[1].last_bn = True
        self.shortcut = nn.Sequential(
            _conv(in_channels, in_channels, 3, 2, groups=in_channels), nn.BatchNorm2d(in_channels),
            _conv(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.dwconv2(self.dwconv1(self.conv1(x))))
        return self.relu(y + self.shortcut(x))


class ContextEmbedding(nn.Module):
    def __init__(self, channels: int = 128):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv_gap = ConvBNReLU(channels, channels, 1)
        self.conv_last = ConvBNReLU(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(x + self.conv_gap(self.bn(spatial_mean(x))))


class SemanticBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.S1S2 = StemBlock()
        self.S3 = nn.Sequential(GatherExpandS2(16, 32), GatherExpandS1(32, 32))
        self.S4 = nn.Sequential(GatherExpandS2(32, 64), GatherExpandS1(64, 64))
        self.S5_4 = nn.Sequential(GatherExpandS2(64, 128), *[GatherExpandS1(128, 128) for _ in range(3)])
        self.S5_5 = ContextEmbedding(128)

    def forward(self, x: torch.Tensor):
        feat2 = self.S1S2(x)      # (N, 16, H/4, W/4)
        feat3 = self.S3(feat2)    # (N, 32, H/8, W/8)
        feat4 = self.S4(feat3)    # (N, 64, H/16, W/16)
        feat5_4 = self.S5_4(feat4)  # (N, 128, H/32, W/32)
        return feat2, feat3, feat4, feat5_4, self.S5_5(feat5_4)


class BilateralGuidedAggregation(nn.Module):
    def __init__(self, channels: int = 128):
        super().__init__()
        self.left1 = nn.Sequential(_conv(channels, channels, 3, groups=channels), nn.BatchNorm2d(channels),
                                   _conv(channels, channels, 1))
        self.left2 = nn.Sequential(_conv(channels, channels, 3, 2), nn.BatchNorm2d(channels),
                                   nn.AvgPool2d(3, 2, 1, count_include_pad=True))
        self.right1 = _conv_bn(channels, channels, 3)
        self.right2 = nn.Sequential(_conv(channels, channels, 3, groups=channels), nn.BatchNorm2d(channels),
                                    _conv(channels, channels, 1))
        self.conv = _conv_bn(channels, channels, 3, relu=True)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        detail_size = detail.shape[-2:]
        left1 = self.left1(detail)
        left2 = self.left2(detail)  # 1/32
        right1 = self.right1(semantic)
        right2 = upsample_nearest(self.right2(semantic), left2.shape[-2:])
        left = left1 * torch.sigmoid(upsample_nearest(right1, detail_size))
        right = upsample_nearest(left2 * torch.sigmoid(right2), detail_size)
        return self.conv(left + right)


class _AuxUpsample(nn.Sequential):
    """Sequential(nearest x2 ``0``, ConvBNReLU ``1``) in front of an auxiliary head's classifier."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), ConvBNReLU(in_channels, out_channels, 3))


class SegmentHead(nn.Module):
    """``conv`` CBR 3x3 -> dropout 0.1 -> ``conv_out`` = Sequential(aux upsampling or Identity, 1x1 conv)."""

    def __init__(self, in_channels: int, mid: int, num_classes: int, up_factor: int, aux: bool):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, mid, 3)
        self.drop = nn.Dropout(0.1)
        classifier_in = up_factor * up_factor if aux else mid
        self.conv_out = nn.Sequential(
            _AuxUpsample(mid, classifier_in) if aux else nn.Identity(),
            nn.Conv2d(classifier_in, num_classes, 1, bias=True))

    def forward(self, x: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
        return upsample_bilinear(self.conv_out(self.drop(self.conv(x))), out_size)


class BiSeNetV2(nn.Module):
    """BiSeNetV2 with the ``detail`` / ``segment`` / ``bga`` / ``head`` / ``aux*`` layout."""

    def __init__(self, num_classes: int, aux_heads: bool = True):
        super().__init__()
        self.detail = DetailBranch()
        self.segment = SemanticBranch()
        self.bga = BilateralGuidedAggregation(128)
        self.head = SegmentHead(128, 1024, num_classes, 8, aux=False)
        self.aux_heads = aux_heads
        if aux_heads:
            self.aux2 = SegmentHead(16, 128, num_classes, 4, aux=True)
            self.aux3 = SegmentHead(32, 128, num_classes, 8, aux=True)
            self.aux4 = SegmentHead(64, 128, num_classes, 16, aux=True)
            self.aux5_4 = SegmentHead(128, 128, num_classes, 32, aux=True)
        _init_bisenetv2(self)

    def forward(self, x: torch.Tensor):
        out_size = x.shape[-2:]
        detail = self.detail(x)
        feat2, feat3, feat4, feat5_4, semantic = self.segment(x)
        logits = self.head(self.bga(detail, semantic), out_size)
        if not self.training:
            return logits
        if not self.aux_heads:
            return logits, []
        aux = [self.aux2(feat2, out_size), self.aux3(feat3, out_size), self.aux4(feat4, out_size),
               self.aux5_4(feat5_4, out_size)]
        return logits, aux


# -------------------------------------------------------------------------------------------------
# Initialisation (the same schemes as the Flax models) and the registry
# -------------------------------------------------------------------------------------------------


def _init_resnet(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def _init_bisenetv1(model: nn.Module) -> None:
    """Kaiming normal (fan_in, gain 1) outside the backbone; the backbone keeps its own init."""
    backbone = model.cp.resnet if hasattr(model.cp, "resnet") else model.cp.xception
    in_backbone = {id(m) for m in backbone.modules()}
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in in_backbone:
            nn.init.kaiming_normal_(m.weight, a=1)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _init_bisenetv2(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.zeros_(m.weight) if getattr(m, "last_bn", False) else nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


_V1_BACKBONES = {"bisenetv1_r18": "resnet18", "bisenetv1_r34": "resnet34", "bisenetv1_r50": "resnet50",
                 "bisenetv1_r101": "resnet101", "bisenetv1_x39": "xception39"}
MODEL_NAMES = tuple(sorted(_V1_BACKBONES)) + ("bisenetv2",)


def build_torch_model(model_name: str, num_classes: int, aux_heads: bool = True) -> nn.Module:
    """The PyTorch counterpart of ``bisenet_jax.models.create_model(model_name, num_classes)``.

    Returned in training mode (PyTorch's default); call ``.eval()`` for inference.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if model_name == "bisenetv2":
        return BiSeNetV2(num_classes, aux_heads)
    if model_name == "bisenetv1_x39":
        return BiSeNetV1(num_classes, "xception39", head_mid=64, aux_mid=128, aux_heads=aux_heads)
    if model_name in _V1_BACKBONES:
        return BiSeNetV1(num_classes, _V1_BACKBONES[model_name], aux_heads=aux_heads)
    raise ValueError(f"unknown model {model_name!r}; available: {', '.join(MODEL_NAMES)}")


def count_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
