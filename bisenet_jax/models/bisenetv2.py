"""BiSeNetV2 (Yu et al., IJCV 2021) in the layout of the widely used PyTorch implementation.

Detail Branch (``detail``, 1/8, 128 ch) + Semantic Branch (``segment``: stem, Gather-and-Expand
layers, Context Embedding, 1/32) + Bilateral Guided Aggregation (``bga``) + ``head``; the "booster"
auxiliary heads ``aux2``, ``aux3``, ``aux4``, ``aux5_4`` run only in training. Names follow the
PyTorch ``state_dict`` layout (Sequential indices as ``"0"``...); see ``bisenet_jax/convert/names.py``.

Sown intermediates: ``detail_branch``, ``semantic`` (after context embedding), ``semantic_1_4`` ...
``semantic_1_32`` (S1S2, S3, S4, S5_4), ``aggregated`` (BGA output), ``aux_logits_*``. (Not
``detail`` / ``bga``: those are submodule names, and a sown key may not reuse one.)
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from bisenet_jax.models.kernels import XLA_KERNELS, Kernels
from bisenet_jax.models.layers import (Convolution, ConvBNReLU, avg_pool_3x3_s2, batch_norm, check_input,
                                       kaiming_fan_out, resize, spatial_mean)

Dtype = Any
EXPANSION = 6


def _cbr(features, kernel_size=3, strides=1, dtype=jnp.float32, kernels=XLA_KERNELS, name=None):
    return ConvBNReLU(features, kernel_size, strides, dtype=dtype, kernel_init=kaiming_fan_out, kernels=kernels,
                      name=name)


def _conv(features, kernel_size=3, strides=1, groups=1, dtype=jnp.float32, kernels=XLA_KERNELS, name=None):
    return Convolution(features, kernel_size, strides, groups=groups, dtype=dtype, kernel_init=kaiming_fan_out,
                       kernels=kernels, name=name)


class Sequential(nn.Module):
    """Children named ``"0"``, ``"1"``, ... like a PyTorch ``nn.Sequential`` of ConvBNReLUs."""

    specs: tuple  # ((features, kernel, stride), ...)
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, (features, kernel, stride) in enumerate(self.specs):
            x = _cbr(features, kernel, stride, self.dtype, self.kernels, name=str(i))(x, train)
        return x


class DetailBranch(nn.Module):
    """(N, H, W, 3) -> (N, H/8, W/8, 128); wide and shallow."""

    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = Sequential(((64, 3, 2), (64, 3, 1)), self.dtype, self.kernels, name="S1")(x, train)
        x = Sequential(((64, 3, 2), (64, 3, 1), (64, 3, 1)), self.dtype, self.kernels, name="S2")(x, train)
        return Sequential(((128, 3, 2), (128, 3, 1), (128, 3, 1)), self.dtype, self.kernels, name="S3")(x, train)


class StemBlock(nn.Module):
    """(N, H, W, 3) -> (N, H/4, W/4, 16): conv, then [conv 1x1, conv s2] || maxpool, fused."""

    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = _cbr(16, 3, 2, self.dtype, self.kernels, name="conv")(x, train)
        left = Sequential(((8, 1, 1), (16, 3, 2)), self.dtype, self.kernels, name="left")(x, train)
        right = self.kernels.max_pool_3x3_s2(x)
        return _cbr(16, 3, 1, self.dtype, self.kernels, name="fuse")(jnp.concatenate([left, right], axis=-1), train)


class ConvBN(nn.Module):
    """A (depthwise or dense) conv ``"0"`` followed by BN ``"1"``: PyTorch Sequential(conv, bn)."""

    features: int
    kernel_size: int = 3
    strides: int = 1
    groups: int = 1
    relu: bool = False
    zero_init_bn: bool = False
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = _conv(self.features, self.kernel_size, self.strides, self.groups, self.dtype, self.kernels, name="0")(x)
        scale_init = nn.initializers.zeros if self.zero_init_bn else nn.initializers.ones
        x = batch_norm(train, self.dtype, scale_init=scale_init, name="1")(x)
        return nn.relu(x) if self.relu else x


class GatherExpandS1(nn.Module):
    """GE layer, stride 1: conv3x3, depthwise expand x6, 1x1 project (BN gamma 0), residual."""

    features: int
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        y = _cbr(c, 3, 1, self.dtype, self.kernels, name="conv1")(x, train)
        y = ConvBN(c * EXPANSION, 3, 1, groups=c, relu=True, dtype=self.dtype, kernels=self.kernels,
                   name="dwconv")(y, train)
        y = ConvBN(self.features, 1, zero_init_bn=True, dtype=self.dtype, kernels=self.kernels, name="conv2")(y, train)
        return nn.relu(y + x)


class GatherExpandS2(nn.Module):
    """GE layer, stride 2, with a depthwise-separable projection shortcut."""

    features: int
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        mid = c * EXPANSION
        y = _cbr(c, 3, 1, self.dtype, self.kernels, name="conv1")(x, train)
        y = ConvBN(mid, 3, 2, groups=c, dtype=self.dtype, kernels=self.kernels, name="dwconv1")(y, train)
        y = ConvBN(mid, 3, 1, groups=mid, relu=True, dtype=self.dtype, kernels=self.kernels, name="dwconv2")(y, train)
        y = ConvBN(self.features, 1, zero_init_bn=True, dtype=self.dtype, kernels=self.kernels, name="conv2")(y, train)
        shortcut = GatherExpandShortcut(self.features, self.dtype, self.kernels, name="shortcut")(x, train)
        return nn.relu(y + shortcut)


class GatherExpandShortcut(nn.Module):
    """PyTorch Sequential(dwconv 3x3 s2 ``0``, BN ``1``, conv 1x1 ``2``, BN ``3``)."""

    features: int
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        x = _conv(c, 3, 2, groups=c, dtype=self.dtype, kernels=self.kernels, name="0")(x)
        x = batch_norm(train, self.dtype, name="1")(x)
        x = _conv(self.features, 1, dtype=self.dtype, kernels=self.kernels, name="2")(x)
        return batch_norm(train, self.dtype, name="3")(x)


class GatherExpandStage(nn.Module):
    """One GE-S2 (``"0"``) then ``num_s1`` GE-S1 layers (``"1"``...)."""

    features: int
    num_s1: int
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = GatherExpandS2(self.features, self.dtype, self.kernels, name="0")(x, train)
        for i in range(self.num_s1):
            x = GatherExpandS1(self.features, self.dtype, self.kernels, name=str(i + 1))(x, train)
        return x


class ContextEmbedding(nn.Module):
    """CE block: BN(mean) -> ConvBNReLU 1x1 ``conv_gap`` -> + input -> ConvBNReLU 3x3 ``conv_last``."""

    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        gap = batch_norm(train, self.dtype, name="bn")(spatial_mean(x))
        gap = _cbr(128, 1, 1, self.dtype, self.kernels, name="conv_gap")(gap, train)
        return _cbr(128, 3, 1, self.dtype, self.kernels, name="conv_last")(x + gap, train)


class SemanticBranch(nn.Module):
    """Returns the 1/4, 1/8, 1/16, 1/32 features (16, 32, 64, 128 ch) and the embedded 1/32 one."""

    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        feat2 = StemBlock(self.dtype, self.kernels, name="S1S2")(x, train)
        feat3 = GatherExpandStage(32, 1, self.dtype, self.kernels, name="S3")(feat2, train)
        feat4 = GatherExpandStage(64, 1, self.dtype, self.kernels, name="S4")(feat3, train)
        feat5_4 = GatherExpandStage(128, 3, self.dtype, self.kernels, name="S5_4")(feat4, train)
        feat5_5 = ContextEmbedding(self.dtype, self.kernels, name="S5_5")(feat5_4, train)
        return feat2, feat3, feat4, feat5_4, feat5_5


class DepthwiseSeparable(nn.Module):
    """PyTorch Sequential(depthwise 3x3 ``0``, BN ``1``, pointwise 1x1 ``2``) of the BGA layer."""

    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        x = _conv(c, 3, 1, groups=c, dtype=self.dtype, kernels=self.kernels, name="0")(x)
        x = batch_norm(train, self.dtype, name="1")(x)
        return _conv(c, 1, dtype=self.dtype, kernels=self.kernels, name="2")(x)


class BilateralGuidedAggregation(nn.Module):
    """BGA: each branch gates the other at its own resolution; output (N, H/8, W/8, 128)."""

    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, detail, semantic, train: bool = False):
        detail_size = detail.shape[1:3]
        left1 = DepthwiseSeparable(self.dtype, self.kernels, name="left1")(detail, train)
        left2 = ConvBN(128, 3, 2, dtype=self.dtype, kernels=self.kernels, name="left2")(detail, train)
        left2 = avg_pool_3x3_s2(left2)  # 1/32
        right1 = ConvBN(128, 3, 1, dtype=self.dtype, kernels=self.kernels, name="right1")(semantic, train)
        right2 = DepthwiseSeparable(self.dtype, self.kernels, name="right2")(semantic, train)
        left = left1 * nn.sigmoid(resize(right1, detail_size, "nearest"))  # nearest x4 at multiples of 32
        if left2.shape[1:3] != right2.shape[1:3]:
            right2 = resize(right2, left2.shape[1:3], "nearest")
        right = resize(left2 * nn.sigmoid(right2), detail_size, "nearest")
        return ConvBN(128, 3, 1, relu=True, dtype=self.dtype, kernels=self.kernels, name="conv")(left + right, train)


class SegmentHead(nn.Module):
    """``conv`` CBR 3x3 -> dropout (0.1) -> ``conv_out`` -> bilinear to ``out_size``.

    PyTorch upsamples bilinearly by ``up`` (main head) or ``up/2`` after a nearest x2 (auxiliary
    heads); resizing straight to the input size is identical at multiples of 32.
    """

    mid: int
    num_classes: int
    up_factor: int
    aux: bool
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS
    dropout: float = 0.1

    @nn.compact
    def __call__(self, x, out_size, train: bool = False):
        x = _cbr(self.mid, 3, 1, self.dtype, self.kernels, name="conv")(x, train)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = HeadClassifier(self.num_classes, self.up_factor ** 2 if self.aux else 0, self.dtype, self.kernels,
                           name="conv_out")(x, train)
        return resize(x.astype(jnp.promote_types(x.dtype, jnp.float32)), out_size, "bilinear")


class HeadClassifier(nn.Module):
    """PyTorch ``conv_out`` Sequential: ``0`` = [nearest x2, CBR ``1``] (auxiliary heads only),
    ``1`` = 1x1 conv with bias to the classes."""

    num_classes: int
    aux_features: int = 0  # 0: no upsampling block (main head)
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.aux_features:
            x = _AuxUp(self.aux_features, self.dtype, self.kernels, name="0")(x, train)
        return Convolution(self.num_classes, 1, use_bias=True, dtype=self.dtype, kernel_init=kaiming_fan_out,
                           kernels=self.kernels, name="1")(x)


class _AuxUp(nn.Module):
    """PyTorch's ``Sequential(Upsample(scale_factor=2), ConvBNReLU)``: holds the CBR at index ``1``,
    which takes the nearest x2 upsampling in (``kernels.upsample2_conv3x3``)."""

    features: int
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        up = (2 * x.shape[1], 2 * x.shape[2])
        return _cbr(self.features, 3, 1, self.dtype, self.kernels, name="1")(x, train, upsample_to=up)


class BiSeNetV2(nn.Module):
    """BiSeNetV2. ``__call__(x, train)``: x (N, H, W, 3) normalised NHWC float, any H, W >= 32.

    Returns float32 logits (N, H, W, num_classes); with ``train=True`` returns
    ``(logits, [aux2, aux3, aux4, aux5_4])`` (empty list without auxiliary heads). Dropout in the
    heads needs a ``"dropout"`` rng in training; ``dropout`` is its rate (0.1 as in PyTorch; 0 turns
    it off, e.g. to compare two training runs step by step). ``kernels``: every convolution, the max
    pool and the loss's OHEM threshold come from this bundle (``create_model`` picks it per backend;
    see :mod:`bisenet_jax.models.kernels`).
    """

    num_classes: int
    aux_heads: bool = True
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS
    dropout: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        check_input(x)
        out_size = x.shape[1:3]
        x = x.astype(self.dtype)
        detail = DetailBranch(self.dtype, self.kernels, name="detail")(x, train)
        feat2, feat3, feat4, feat5_4, semantic = SemanticBranch(self.dtype, self.kernels, name="segment")(x, train)
        aggregated = BilateralGuidedAggregation(self.dtype, self.kernels, name="bga")(detail, semantic, train)
        for key, value in (("detail_branch", detail), ("semantic", semantic), ("semantic_1_4", feat2),
                           ("semantic_1_8", feat3), ("semantic_1_16", feat4), ("semantic_1_32", feat5_4),
                           ("aggregated", aggregated)):
            self.sow("intermediates", key, value)
        logits = SegmentHead(1024, self.num_classes, 8, False, self.dtype, self.kernels, self.dropout,
                             name="head")(aggregated, out_size, train)
        if not (train or self.is_initializing()):
            return logits
        aux = []
        if self.aux_heads:
            for name, feat, mid, up in (("aux2", feat2, 128, 4), ("aux3", feat3, 128, 8),
                                        ("aux4", feat4, 128, 16), ("aux5_4", feat5_4, 128, 32)):
                aux_logits = SegmentHead(mid, self.num_classes, up, True, self.dtype, self.kernels, self.dropout,
                                         name=name)(feat, out_size, train)
                self.sow("intermediates", f"aux_logits_{name[3:]}", aux_logits)
                aux.append(aux_logits)
        return (logits, aux) if train else logits
