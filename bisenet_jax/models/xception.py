"""Xception39, the context path of the paper's fastest BiSeNet (BiSeNetV1, Yu et al., ECCV 2018).

No PyTorch ImageNet weights exist for it; the authors train it from scratch, and so do we. The
structure (stem, three stages of 4/8/4 blocks with expansion 4, separable convolutions) follows the
authors' code; the parameter names are ours (there is no PyTorch layout to match).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from bisenet_jax.models.kernels import XLA_KERNELS, Kernels, crop_spatial
from bisenet_jax.models.layers import Convolution, ConvBNReLU

Dtype = Any

XCEPTION39_STAGES = ((4, 16), (8, 32), (4, 64))  # (blocks, middle width) per stage
XCEPTION39_EXPANSION = 4


class SeparableConv(nn.Module):
    """Depthwise 3x3 (no BN) ``depthwise`` then pointwise 1x1 conv-BN(-ReLU) ``pointwise``."""

    features: int
    strides: int = 1
    relu: bool = True
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS
    padding: int | None = None  # the depthwise's (None: Convolution's kernel_size // 2); 0 for a padded input

    @nn.compact
    def __call__(self, x, train: bool = False):
        channels = x.shape[-1]
        x = Convolution(channels, 3, self.strides, groups=channels, dtype=self.dtype, kernels=self.kernels,
                        padding=self.padding, name="depthwise")(x)
        return ConvBNReLU(self.features, 1, relu=self.relu, dtype=self.dtype, kernels=self.kernels,
                          name="pointwise")(x, train)


class XceptionBlock(nn.Module):
    """Residual branch of three separable convs (last without ReLU) plus identity or projection."""

    mid: int
    strides: int = 1
    project: bool = False
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        out = self.mid * XCEPTION39_EXPANSION
        sep = lambda features, strides, relu, name, padding=None: SeparableConv(
            features, strides, relu, self.dtype, self.kernels, padding, name=name)
        # x is read by sep1's depthwise (and the shortcut's) and by the add: padded once on CPU.
        xs, pad = self.kernels.pad_shared(x, 1)
        y = sep(self.mid, self.strides, True, "sep1", pad)(xs, train)
        y = sep(self.mid, 1, True, "sep2")(y, train)
        y = sep(out, 1, False, "sep3")(y, train)
        if self.project:
            x = sep(out, self.strides, False, "shortcut", pad)(xs, train)
        else:
            x = crop_spatial(xs, 1 - pad)
        return nn.relu(y + x)


class XceptionStage(nn.Module):
    num_blocks: int
    mid: int
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i in range(self.num_blocks):
            x = XceptionBlock(self.mid, 2 if i == 0 else 1, i == 0, self.dtype, self.kernels, name=str(i))(x, train)
        return x


def xception39_out_channels() -> tuple[int, int, int]:
    """Channels of the (1/8, 1/16, 1/32) features: 64, 128, 256."""
    return tuple(mid * XCEPTION39_EXPANSION for _, mid in XCEPTION39_STAGES)


class Xception39(nn.Module):
    """Returns ``(feat8, feat16, feat32)`` with 64, 128 and 256 channels."""

    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        x = ConvBNReLU(8, 3, 2, dtype=self.dtype, kernels=self.kernels, name="conv1")(x, train)  # (N, H/2, W/2, 8)
        x = self.kernels.max_pool_3x3_s2(x)  # (N, H/4, W/4, 8)
        features = []
        for k, (num_blocks, mid) in enumerate(XCEPTION39_STAGES):
            x = XceptionStage(num_blocks, mid, self.dtype, self.kernels, name=f"layer{k + 1}")(x, train)
            features.append(x)
        return tuple(features)
