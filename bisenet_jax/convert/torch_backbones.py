"""The PyTorch building blocks and backbones of :mod:`bisenet_jax.convert.torch_models`.

Shared layers (``ConvBNReLU``, the resize helpers), torchvision-structured ResNets (whose
``state_dict`` is an ImageNet checkpoint's layout with ``num_classes``) and Xception39. Resizing
follows the Flax models exactly: integer-factor nearest upsampling repeats pixels, other sizes use
half-pixel nearest sampling, bilinear resizes use ``align_corners=False``.

torch is imported here only (and in the other ``torch_*`` modules): ``import bisenet_jax.convert``
does not import it.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

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


def make_conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
          bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)


def upsample_nearest(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest resize to ``size``: pixel repetition at integer factors, half-pixel sampling otherwise.

    Half-pixel sampling ("nearest-exact") equals repetition at integer factors and the identity at
    the same size, so under ``torch.export`` with symbolic sizes it is the one form used: the
    shortcuts below need concrete sizes.
    """
    h, w = x.shape[-2:]
    out_h, out_w = size[0], size[1]
    if _concrete(h, w, out_h, out_w):
        if (h, w) == (out_h, out_w):
            return x
        if out_h % h == 0 and out_w % w == 0:
            return F.interpolate(x, size=(out_h, out_w), mode="nearest")
    return F.interpolate(x, size=(out_h, out_w), mode="nearest-exact")


def upsample_bilinear(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with half-pixel centres (``align_corners=False``), no antialiasing."""
    if _concrete(*x.shape[-2:], *size) and tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=(size[0], size[1]), mode="bilinear", align_corners=False)


def _concrete(*sizes) -> bool:
    """True for plain ints; False for ``torch.SymInt`` sizes (export with dynamic height and width)."""
    return all(isinstance(s, int) for s in sizes)


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
        self.conv1 = make_conv(in_channels, width, 3, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = make_conv(width, width, 3)
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
        self.conv1 = make_conv(in_channels, width, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = make_conv(width, width, 3, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = make_conv(width, out_channels, 1)
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
    return nn.Sequential(make_conv(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels))


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
        self.conv1 = make_conv(3, 64, 7, 2)
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
        init_resnet(self)

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
        self.depthwise = make_conv(in_channels, in_channels, 3, stride, groups=in_channels)
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
        # The Flax Xception39's initialisation (its convolutions' default, kaiming normal, fan_in, gain 1).
        # Until session 16 this module kept PyTorch's default (kaiming uniform with a=sqrt(5): a standard
        # deviation sqrt(3) smaller), so the CamVid races of X39 started the two sides from different scales.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.conv1(x))
        feat8 = self.layer1(x)
        feat16 = self.layer2(feat8)
        return feat8, feat16, self.layer3(feat16)


def init_resnet(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
