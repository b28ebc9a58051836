"""torchvision-structured ResNets (18/34 BasicBlock, 50/101 Bottleneck) as BiSeNet context paths.

Names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0`` ...), so
torchvision ImageNet weights import one-to-one. The network returns the 1/8, 1/16 and 1/32
features; there is no classifier.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import flax.linen as nn
import jax.numpy as jnp

from bisenet_jax.models.kernels import XLA_KERNELS, Kernels
from bisenet_jax.models.layers import Convolution, batch_norm, kaiming_fan_out

Dtype = Any


class Downsample(nn.Module):
    """torchvision's ``downsample`` Sequential: 1x1 strided conv ``0`` then BN ``1``."""

    features: int
    strides: int
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = Convolution(self.features, 1, self.strides, dtype=self.dtype, kernel_init=kaiming_fan_out,
                        kernels=self.kernels, name="0")(x)
        return batch_norm(train, self.dtype, name="1")(x)


class BasicBlock(nn.Module):
    features: int
    strides: int = 1
    project: bool = False
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = lambda f, k, s, name: Convolution(f, k, s, dtype=self.dtype, kernel_init=kaiming_fan_out,
                                                 kernels=self.kernels, name=name)
        y = conv(self.features, 3, self.strides, "conv1")(x)
        y = nn.relu(batch_norm(train, self.dtype, name="bn1")(y))
        y = conv(self.features, 3, 1, "conv2")(y)
        y = batch_norm(train, self.dtype, name="bn2")(y)
        if self.project:
            x = Downsample(self.features, self.strides, self.dtype, self.kernels, name="downsample")(x, train)
        return nn.relu(y + x)


class Bottleneck(nn.Module):
    """torchvision Bottleneck (ResNet v1.5: the stride is on the 3x3 conv)."""

    features: int
    strides: int = 1
    project: bool = False
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = lambda f, k, s, name: Convolution(f, k, s, dtype=self.dtype, kernel_init=kaiming_fan_out,
                                                 kernels=self.kernels, name=name)
        y = conv(self.features, 1, 1, "conv1")(x)
        y = nn.relu(batch_norm(train, self.dtype, name="bn1")(y))
        y = conv(self.features, 3, self.strides, "conv2")(y)
        y = nn.relu(batch_norm(train, self.dtype, name="bn2")(y))
        y = conv(self.features * 4, 1, 1, "conv3")(y)
        y = batch_norm(train, self.dtype, name="bn3")(y)
        if self.project:
            x = Downsample(self.features * 4, self.strides, self.dtype, self.kernels, name="downsample")(x, train)
        return nn.relu(y + x)


RESNET_STAGES = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


def resnet_out_channels(depth: int) -> tuple[int, int, int]:
    """Channels of the (1/8, 1/16, 1/32) features."""
    block, _ = RESNET_STAGES[depth]
    return tuple(w * block.expansion for w in (128, 256, 512))


class ResNetStage(nn.Module):
    """torchvision's ``layerK``: blocks named ``"0"``, ``"1"``, ...; the first may stride/project."""

    block: Any
    width: int
    num_blocks: int
    strides: int
    in_channels: int
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        out_channels = self.width * self.block.expansion
        for i in range(self.num_blocks):
            strides = self.strides if i == 0 else 1
            project = i == 0 and (strides != 1 or self.in_channels != out_channels)
            x = self.block(self.width, strides, project, self.dtype, self.kernels, name=str(i))(x, train)
        return x


class ResNet(nn.Module):
    """Returns ``(feat8, feat16, feat32)``: (N, H/8, W/8, C8), (N, H/16, W/16, C16), (N, H/32, W/32, C32)."""

    depth: int = 18
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        if self.depth not in RESNET_STAGES:
            raise ValueError(f"ResNet depth {self.depth} is not supported; expected one of {sorted(RESNET_STAGES)}")
        block, stage_sizes = RESNET_STAGES[self.depth]
        x = Convolution(64, 7, 2, dtype=self.dtype, kernel_init=kaiming_fan_out, kernels=self.kernels, name="conv1")(x)
        x = nn.relu(batch_norm(train, self.dtype, name="bn1")(x))
        x = self.kernels.max_pool_3x3_s2(x)  # (N, H/4, W/4, 64)
        in_channels, features = 64, []
        for k, (num_blocks, width) in enumerate(zip(stage_sizes, (64, 128, 256, 512))):
            x = ResNetStage(block, width, num_blocks, 1 if k == 0 else 2, in_channels, self.dtype, self.kernels,
                            name=f"layer{k + 1}")(x, train)
            in_channels = width * block.expansion
            features.append(x)
        return tuple(features[1:])  # 1/8, 1/16, 1/32
