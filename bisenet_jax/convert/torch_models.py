"""A minimal PyTorch definition of BiSeNetV1 and BiSeNetV2 in the layout the PyTorch world uses.

Written so that a user without any other repository can load a state_dict exported by
:func:`bisenet_jax.convert.to_torch_state_dict` and run it (or export it to ONNX).
``state_dict()`` of the training-mode models has exactly the keys and shapes of the widely used
PyTorch implementation's checkpoints, ``num_batches_tracked`` included. It is also the eager PyTorch
reference of the speed and training benchmarks. The layers and backbones are in
:mod:`bisenet_jax.convert.torch_backbones`; :func:`torch_model_from_variables` and
:func:`load_torch_model` return a model holding given weights.

Inputs are NCHW float tensors (normalised RGB). ``model.eval()``: ``forward`` returns the logits
(N, C, H, W) at the input size. ``model.train()``: ``(logits, [aux logits ...])``, the auxiliary
list empty when the model was built with ``aux_heads=False``.

Resizing follows the Flax models exactly: integer-factor nearest upsampling repeats pixels (the
PyTorch reference's ``Upsample(scale_factor=2)``); where a side is not a multiple of 32 the
upsampled feature is resized to the skip feature's exact size with half-pixel nearest sampling;
the heads resize bilinearly (``align_corners=False``) straight to the input size.

torch is imported in the ``torch_*`` modules only: ``import bisenet_jax.convert`` does not import it.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from bisenet_jax.convert.files import load_torch_checkpoint, read_safetensors_metadata
from bisenet_jax.convert.state_dict import (guess_model_name, has_aux_heads, num_classes_from_state_dict,
                                            num_classes_of_variables, reject_old_ffm_layout, to_torch_state_dict)
from bisenet_jax.convert.torch_backbones import (ConvBNReLU, ResNet, Xception39, build_torchvision_resnet, make_conv,
                                                 spatial_mean, upsample_bilinear, upsample_nearest)
from bisenet_jax.convert.torch_io import to_tensors

__all__ = [
    "BiSeNetV1", "BiSeNetV2", "ConvBNReLU", "ResNet", "Xception39", "build_torch_model", "build_torchvision_resnet",
    "count_parameters", "load_torch_model", "torch_model_from_variables",
]

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
        self.conv_atten = make_conv(out_channels, out_channels, 1)
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
        self.conv = make_conv(out_channels, out_channels, 1)
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
    layers = [make_conv(in_channels, out_channels, kernel_size, stride, groups), nn.BatchNorm2d(out_channels)]
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
            make_conv(in_channels, in_channels, 3, 2, groups=in_channels), nn.BatchNorm2d(in_channels),
            make_conv(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
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
        self.left1 = nn.Sequential(make_conv(channels, channels, 3, groups=channels), nn.BatchNorm2d(channels),
                                   make_conv(channels, channels, 1))
        self.left2 = nn.Sequential(make_conv(channels, channels, 3, 2), nn.BatchNorm2d(channels),
                                   nn.AvgPool2d(3, 2, 1, count_include_pad=True))
        self.right1 = _conv_bn(channels, channels, 3)
        self.right2 = nn.Sequential(make_conv(channels, channels, 3, groups=channels), nn.BatchNorm2d(channels),
                                    make_conv(channels, channels, 1))
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


def _init_bisenetv1(model: nn.Module) -> None:
    """Kaiming normal (fan_in, gain 1) outside the backbone; the backbone keeps its own init (ResNet: fan_out,
    ReLU gain, as torchvision and the Flax ResNet; Xception39: fan_in, gain 1, as the Flax Xception39)."""
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


# -------------------------------------------------------------------------------------------------
# Models holding given weights
# -------------------------------------------------------------------------------------------------


def torch_model_from_variables(variables: Mapping[str, Any], model_name: str, *, aux_heads: bool = False) -> nn.Module:
    """The PyTorch module (eval mode) holding JAX ``variables``, loaded with ``strict=True``."""
    num_classes = num_classes_of_variables(variables, model_name)
    model = build_torch_model(model_name, num_classes, aux_heads=aux_heads)
    model.load_state_dict(to_torch_state_dict(variables, model_name, aux_heads=aux_heads, as_torch=True), strict=True)
    return model.eval()


def load_torch_model(path: str | os.PathLike, model_name: str | None = None) -> nn.Module:
    """The PyTorch module (eval mode) with the weights of a ``.pth`` / ``.safetensors`` file.

    The model comes from ``model_name``, else the file's safetensors metadata, else its keys; the
    class count from the classifier; auxiliary heads are built if the file has them. Loaded with
    ``strict=True``.
    """
    state_dict = load_torch_checkpoint(path)
    reject_old_ffm_layout(state_dict)
    model_name = model_name or read_safetensors_metadata(path).get("model_name") or guess_model_name(state_dict)
    if model_name is None:
        raise ValueError(f"{path}: cannot tell which BiSeNet this is from its keys; pass model_name")
    model = build_torch_model(model_name, num_classes_from_state_dict(state_dict, model_name),
                              aux_heads=has_aux_heads(state_dict, model_name))
    model.load_state_dict(to_tensors(state_dict), strict=True)
    return model.eval()
