"""BiSeNetV1 (Yu et al., ECCV 2018) in the layout the PyTorch world interchanges.

Spatial Path (``sp``, 1/8, 128 ch) + Context Path (``cp``: backbone, ARMs on the 1/16 and 1/32
features, global context) fused by the Feature Fusion Module (``ffm``), with the prediction head
``conv_out`` and the training-only auxiliary heads ``conv_out16`` / ``conv_out32``. Module names are
those of the PyTorch ``state_dict`` layout; see ``bisenet_jax/convert/names.py``.

Named intermediate features are sown into the ``intermediates`` collection (call ``apply`` with
``mutable=["intermediates"]``): ``spatial_path``, ``context_1_8``, ``context_1_16``,
``cp/arm16/attention``, ``cp/arm32/attention``, ``cp/global_context``, ``ffm/attention``, ``fused``,
and in training ``aux_logits_16``, ``aux_logits_32`` (paths in the collection; each value is a
1-tuple, as ``sow`` stores them).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from bisenet_jax.models.kernels import XLA_KERNELS, Kernels
from bisenet_jax.models.layers import Convolution, ConvBNReLU, batch_norm, check_input, resize, spatial_mean
from bisenet_jax.models.resnet import ResNet
from bisenet_jax.models.xception import Xception39

Dtype = Any


class SpatialPath(nn.Module):
    """Three stride-2 ConvBNReLUs and a 1x1 projection: (N, H, W, 3) -> (N, H/8, W/8, 128)."""

    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        cbr = lambda features, k, strides, name: ConvBNReLU(features, k, strides, dtype=self.dtype,
                                                            kernels=self.kernels, name=name)
        x = cbr(64, 7, 2, "conv1")(x, train)
        x = cbr(64, 3, 2, "conv2")(x, train)
        x = cbr(64, 3, 2, "conv3")(x, train)
        return cbr(128, 1, 1, "conv_out")(x, train)


class AttentionRefinement(nn.Module):
    """ARM: ConvBNReLU 3x3, then channel attention sigmoid(BN(conv1x1(mean))) multiplies it."""

    features: int = 128
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, train: bool = False):
        feat = ConvBNReLU(self.features, 3, dtype=self.dtype, kernels=self.kernels, name="conv")(x, train)
        attention = Convolution(self.features, 1, dtype=self.dtype, kernels=self.kernels,
                                name="conv_atten")(spatial_mean(feat))
        attention = nn.sigmoid(batch_norm(train, self.dtype, name="bn_atten")(attention))  # (N, 1, 1, C)
        self.sow("intermediates", "attention", attention)
        return feat * attention


class ContextPath(nn.Module):
    """Backbone + ARMs + global context; returns (context_1_8, context_1_16), 128 channels each.

    Where an upsampled feature does not match the size of the skip feature it is added to (sides
    not multiples of 32), it is resized to the skip's exact size; otherwise the x2 nearest
    upsampling is exactly the PyTorch one.
    """

    backbone: str = "resnet18"
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    def setup(self):
        if self.backbone.startswith("resnet"):
            self.resnet = ResNet(int(self.backbone[len("resnet"):]), self.dtype, self.kernels)
        elif self.backbone == "xception39":
            self.xception = Xception39(self.dtype, self.kernels)
        else:
            raise ValueError(f"unknown BiSeNetV1 backbone {self.backbone!r}; expected resnet18/34/50/101 or xception39")
        self.arm16 = AttentionRefinement(128, self.dtype, self.kernels)
        self.arm32 = AttentionRefinement(128, self.dtype, self.kernels)
        self.conv_head32 = ConvBNReLU(128, 3, dtype=self.dtype, kernels=self.kernels)
        self.conv_head16 = ConvBNReLU(128, 3, dtype=self.dtype, kernels=self.kernels)
        self.conv_avg = ConvBNReLU(128, 1, dtype=self.dtype, kernels=self.kernels)

    def __call__(self, x, train: bool = False):
        backbone = self.resnet if self.backbone.startswith("resnet") else self.xception
        feat8, feat16, feat32 = backbone(x, train)
        global_context = self.conv_avg(spatial_mean(feat32), train)  # (N, 1, 1, 128)
        self.sow("intermediates", "global_context", global_context)

        feat32_sum = self.arm32(feat32, train) + global_context  # (N, H/32, W/32, 128)
        # Nearest upsampling to the skip's size, then the 3x3 ConvBNReLU (one kernel op at x2).
        context_1_16 = self.conv_head32(feat32_sum, train, upsample_to=feat16.shape[1:3])
        feat16_sum = self.arm16(feat16, train) + context_1_16  # (N, H/16, W/16, 128)
        context_1_8 = self.conv_head16(feat16_sum, train, upsample_to=feat8.shape[1:3])
        return context_1_8, context_1_16


class FeatureFusion(nn.Module):
    """FFM: concat[spatial, context] -> ConvBNReLU 1x1 -> feat * att + feat (att: SE-style)."""

    features: int = 256
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, spatial, context, train: bool = False):
        if spatial.shape[1:3] != context.shape[1:3]:
            context = resize(context, spatial.shape[1:3], "nearest")
        feat = ConvBNReLU(self.features, 1, dtype=self.dtype, kernels=self.kernels, name="convblk")(
            jnp.concatenate([spatial, context], axis=-1), train)
        attention = Convolution(self.features, 1, dtype=self.dtype, kernels=self.kernels,
                                name="conv")(spatial_mean(feat))
        attention = nn.sigmoid(batch_norm(train, self.dtype, name="bn")(attention))  # (N, 1, 1, C)
        self.sow("intermediates", "attention", attention)
        return feat * attention + feat


class SegmentationOutput(nn.Module):
    """PyTorch ``BiSeNetOutput``: ConvBNReLU 3x3 ``conv`` -> 1x1 ``conv_out`` (bias) -> bilinear.

    The bilinear resize goes straight to ``out_size`` (the input size), which at multiples of the
    head's stride equals PyTorch's ``Upsample(scale_factor=up)`` with ``align_corners=False``.
    """

    mid: int
    num_classes: int
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x, out_size, train: bool = False):
        x = ConvBNReLU(self.mid, 3, dtype=self.dtype, kernels=self.kernels, name="conv")(x, train)
        x = Convolution(self.num_classes, 1, use_bias=True, dtype=self.dtype, kernels=self.kernels,
                        name="conv_out")(x)
        return resize(x.astype(jnp.promote_types(x.dtype, jnp.float32)), out_size, "bilinear")


class BiSeNetV1(nn.Module):
    """BiSeNetV1. ``__call__(x, train)``: x (N, H, W, 3) normalised NHWC float, any H, W >= 32.

    Returns float32 logits (N, H, W, num_classes); with ``train=True`` returns
    ``(logits, [aux_logits_16, aux_logits_32])`` (an empty list if ``aux_heads=False``).
    ``kernels``: every convolution, the backbone's max pool and the loss's OHEM threshold come from
    this bundle (``create_model`` picks it per backend; see :mod:`bisenet_jax.models.kernels`).
    """

    num_classes: int
    backbone: str = "resnet18"
    head_mid: int = 256
    aux_mid: int = 64
    aux_heads: bool = True
    dtype: Dtype = jnp.float32
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        check_input(x)
        out_size = x.shape[1:3]
        x = x.astype(self.dtype)
        context_1_8, context_1_16 = ContextPath(self.backbone, self.dtype, self.kernels, name="cp")(x, train)
        spatial = SpatialPath(self.dtype, self.kernels, name="sp")(x, train)  # (N, H/8, W/8, 128)
        fused = FeatureFusion(256, self.dtype, self.kernels, name="ffm")(spatial, context_1_8, train)
        for key, value in (("spatial_path", spatial), ("context_1_8", context_1_8),
                           ("context_1_16", context_1_16), ("fused", fused)):
            self.sow("intermediates", key, value)
        logits = SegmentationOutput(self.head_mid, self.num_classes, self.dtype, self.kernels, name="conv_out")(
            fused, out_size, train)
        if not (train or self.is_initializing()):
            return logits
        aux = []
        if self.aux_heads:
            aux16 = SegmentationOutput(self.aux_mid, self.num_classes, self.dtype, self.kernels, name="conv_out16")(
                context_1_8, out_size, train)
            aux32 = SegmentationOutput(self.aux_mid, self.num_classes, self.dtype, self.kernels, name="conv_out32")(
                context_1_16, out_size, train)
            self.sow("intermediates", "aux_logits_16", aux16)
            self.sow("intermediates", "aux_logits_32", aux32)
            aux = [aux16, aux32]
        return (logits, aux) if train else logits

