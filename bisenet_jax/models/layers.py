"""Building blocks shared by every BiSeNet variant: one convolution, one ConvBNReLU, one resize helper.

Module and parameter names follow the PyTorch ``state_dict`` layouts (``conv`` / ``bn`` inside a
ConvBNReLU, Sequential indices ``"0"``, ``"1"`` ...), so that a Flax parameter path joined with
dots is the PyTorch key up to the leaf name; see ``bisenet_jax/convert/names.py``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from bisenet_jax.models.kernels import XLA_KERNELS, Kernels, grouped_conv

Dtype = Any

# PyTorch BatchNorm2d: eps 1e-5, momentum 0.1 (running = 0.9 * running + 0.1 * batch), which is
# Flax momentum 0.9.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# Kaiming normal with fan_in and gain 1 (PyTorch's kaiming_normal_(a=1)), the init of BiSeNetV1.
kaiming_fan_in = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
# Kaiming normal, fan_out, ReLU gain: the init of BiSeNetV2 and torchvision ResNets.
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class Convolution(nn.Module):
    """The package's one 2-D convolution: ``nn.Conv``'s parameters (``kernel`` (k, k, in / groups,
    features), optional ``bias``, float32) with PyTorch's ``groups`` and ``padding=k // 2`` on
    every side. (Flax's ``'SAME'`` pads stride-2 convolutions more at the end, which would shift
    every feature by half a pixel against the PyTorch models.)

    A depthwise convolution (``groups`` == input channels > 1) is computed by
    ``kernels.depthwise_conv`` (see :mod:`bisenet_jax.models.kernels`), a nearest x2 upsampling
    followed by a dense 3x3 one by ``kernels.upsample2_conv3x3``; every other one by XLA.
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    groups: int = 1
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    kernel_init: Callable = kaiming_fan_in
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x: jax.Array, upsample_to: Sequence[int] | None = None) -> jax.Array:
        """``upsample_to`` (H, W): resize ``x`` to it with ``resize(..., "nearest")`` first; at exactly
        twice the input size a dense 3x3 stride-1 convolution computes both in one
        ``kernels.upsample2_conv3x3``."""
        channels, k = x.shape[-1], self.kernel_size
        if channels % self.groups or self.features % self.groups:
            raise ValueError(f"{self.name}: {channels} input and {self.features} output channels are not both "
                             f"divisible by groups={self.groups}")
        kernel = self.param("kernel", self.kernel_init, (k, k, channels // self.groups, self.features), jnp.float32)
        x = x.astype(self.dtype)
        if (upsample_to is not None and (k, self.strides, self.groups) == (3, 1, 1)
                and _is_double(x.shape[1:3], upsample_to)):
            y = self.kernels.upsample2_conv3x3(x, kernel)  # the float32 kernel: phase sums at >= float32
        else:
            kernel = kernel.astype(self.dtype)
            if upsample_to is not None:
                x = resize(x, upsample_to, "nearest")
            if channels == self.groups > 1:
                y = self.kernels.depthwise_conv(x, kernel, self.strides, k // 2)
            else:
                y = grouped_conv(x, kernel, self.strides, k // 2, self.groups)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
        return y


def _is_double(size: Sequence[Any], target: Sequence[Any]) -> bool:
    """Whether ``target`` is exactly twice ``size`` in both dims, for concrete sizes only (symbolic
    dims under jax.export take the general path, which computes the same function)."""
    dims = (*size, *target)
    return all(isinstance(d, int) for d in dims) and tuple(target) == (2 * size[0], 2 * size[1])


class BatchNorm(nn.BatchNorm):
    """Flax's BatchNorm, with PyTorch's running variance: the batch variance with Bessel's correction.

    PyTorch's BatchNorm normalises with the biased batch variance (as flax does) but stores the
    unbiased one, ``var * n / (n - 1)``, in ``running_var``; flax stores the biased one and has no
    option for the other. For a convolution's activations (n = batch * height * width) the two are
    the same to a few ppm, but BiSeNet's attention BNs (V1's ARMs, V2's context-embedding block)
    normalise (N, 1, 1, C) vectors, where n is the batch size: at batch 8 flax's running variance
    is 12.5% lower than PyTorch's, and a model trained here would evaluate (and export) differently
    from the same training in PyTorch. This class keeps flax's normalisation and only rescales the
    batch variance's share of the running-variance update.
    """

    @nn.compact
    def __call__(self, x, use_running_average=None, *, mask=None):
        updating = not nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        updating = updating and not self.is_initializing() and self.has_variable("batch_stats", "var")
        previous = self.get_variable("batch_stats", "var") if updating else None
        y = super().__call__(x, use_running_average, mask=mask)
        n = x.size // x.shape[-1]  # values per channel (the global batch under jit's sharding)
        if updating and n > 1 and mask is None:
            updated = self.get_variable("batch_stats", "var")
            # flax: updated = m * previous + (1 - m) * var; PyTorch adds (1 - m) * var / (n - 1) more.
            batch_share = updated - self.momentum * previous
            self.put_variable("batch_stats", "var", updated + batch_share / (n - 1))
        return y


def batch_norm(train: bool, dtype: Dtype = jnp.float32, scale_init: Callable = nn.initializers.ones,
               name: str | None = None) -> BatchNorm:
    """BatchNorm with PyTorch's epsilon, momentum and running variance; statistics kept and reduced in float32.

    Under ``jax.jit`` with the batch sharded over a mesh, the batch mean/variance are over the
    global batch, i.e. this is synchronised BN across devices and hosts without extra code.
    """
    return BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=scale_init,
        # Two-pass variance, mean((x - mean)^2), as PyTorch computes it: the one-pass
        # E[x^2] - E[x]^2 loses precision when |mean| >> std, and then differs between data-parallel
        # layouts that only change the order of the sums.
        use_fast_variance=False,
        name=name,
    )


class ConvBNReLU(nn.Module):
    """Dense conv (no bias, symmetric padding) -> BatchNorm -> optional ReLU; names ``conv`` and ``bn``."""

    features: int
    kernel_size: int = 3
    strides: int = 1
    relu: bool = True
    dtype: Dtype = jnp.float32
    kernel_init: Callable = kaiming_fan_in
    kernels: Kernels = XLA_KERNELS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, upsample_to: Sequence[int] | None = None) -> jax.Array:
        """``upsample_to``: nearest-resize ``x`` to this (H, W) first (see :class:`Convolution`)."""
        x = Convolution(self.features, self.kernel_size, self.strides, dtype=self.dtype,
                        kernel_init=self.kernel_init, kernels=self.kernels, name="conv")(x, upsample_to)
        x = batch_norm(train, self.dtype, name="bn")(x)
        return nn.relu(x) if self.relu else x


def resize(x: jax.Array, size: Sequence[int], method: str = "bilinear") -> jax.Array:
    """Resize NHWC ``x`` to spatial ``size`` = (H, W); the one resize helper of the package.

    ``method="nearest"`` at exactly twice (or any integer multiple of) the input size is the
    PyTorch ``nn.Upsample(scale_factor=k)`` result (every pixel repeated k times), computed with
    ``jnp.repeat`` so the parity is exact. Any other size (inputs whose sides are not multiples of
    32) resizes to exactly ``size``: this is what lets the networks accept any input size.

    ``method="bilinear"`` uses half-pixel centres without antialiasing, i.e. PyTorch's
    ``mode='bilinear', align_corners=False`` for upsampling.
    """
    n, h, w, c = x.shape
    out_h, out_w = size[0], size[1]  # ints, or symbolic dims under jax.export (no int())
    if (h, w) == (out_h, out_w):
        return x
    if method == "nearest":
        if out_h % h == 0 and out_w % w == 0:
            return jnp.repeat(jnp.repeat(x, out_h // h, axis=1), out_w // w, axis=2)
        return jax.image.resize(x, (n, out_h, out_w, c), method="nearest")
    if method == "bilinear":
        return jax.image.resize(x, (n, out_h, out_w, c), method="bilinear", antialias=False)
    raise ValueError(f"resize: unknown method {method!r}; expected 'nearest' or 'bilinear'")


def spatial_mean(x: jax.Array) -> jax.Array:
    """Global average pool keeping dims: (N, H, W, C) -> (N, 1, 1, C), reduced in float32 or wider."""
    return jnp.mean(x.astype(jnp.promote_types(x.dtype, jnp.float32)), axis=(1, 2), keepdims=True).astype(x.dtype)


def avg_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """PyTorch ``AvgPool2d(3, stride=2, padding=1)`` with ``count_include_pad=True``."""
    return nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=True)


# Every model downsamples by 32 (V1's context path, V2's semantic branch): smaller inputs have no 1/32 feature.
MIN_INPUT_SIZE = 32


def check_input(x: jax.Array) -> None:
    """An NHWC batch of RGB images of at least ``MIN_INPUT_SIZE`` pixels a side, or a clear error."""
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected an NHWC batch of RGB images (N, H, W, 3), got shape {tuple(x.shape)}")
    if x.shape[1] < MIN_INPUT_SIZE or x.shape[2] < MIN_INPUT_SIZE:  # side by side: decidable for symbolic dims
        raise ValueError(f"input height and width must be at least {MIN_INPUT_SIZE} pixels, got {tuple(x.shape[1:3])}")
