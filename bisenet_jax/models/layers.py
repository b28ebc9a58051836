"""Building blocks shared by every BiSeNet variant: one ConvBNReLU, one resize helper.

Module and parameter names follow the PyTorch layouts in ``../shared/docs/reference`` (``conv`` /
``bn`` inside a ConvBNReLU, Sequential indices ``"0"``, ``"1"`` ...), so that a Flax parameter path
joined with dots is the PyTorch ``state_dict`` key up to the leaf name (see
``bisenet_jax.convert.names``).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

Dtype = Any

# PyTorch BatchNorm2d: eps 1e-5, momentum 0.1 (running = 0.9 * running + 0.1 * batch), which is
# Flax momentum 0.9.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# Kaiming normal with fan_in and gain 1 (PyTorch's kaiming_normal_(a=1)), the init of BiSeNetV1.
kaiming_fan_in = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
# Kaiming normal, fan_out, ReLU gain: the init of BiSeNetV2 and torchvision ResNets.
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def symmetric_padding(kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """PyTorch-style ``padding=k//2`` on every side.

    Flax's ``'SAME'`` pads stride-2 convolutions asymmetrically (more at the end), which shifts
    every feature by half a pixel against the PyTorch models; explicit symmetric padding matches.
    """
    p = kernel_size // 2
    return ((p, p), (p, p))


def conv2d(
    features: int,
    kernel_size: int = 3,
    strides: int = 1,
    *,
    groups: int = 1,
    use_bias: bool = False,
    dtype: Dtype = jnp.float32,
    kernel_init: Callable = kaiming_fan_in,
    name: str | None = None,
) -> nn.Conv:
    """A 2-D convolution with PyTorch's symmetric padding and float32 parameters."""
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(strides, strides),
        padding=symmetric_padding(kernel_size),
        feature_group_count=groups,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=kernel_init,
        name=name,
    )


def batch_norm(train: bool, dtype: Dtype = jnp.float32, scale_init: Callable = nn.initializers.ones,
               name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with PyTorch's epsilon and momentum; statistics are kept and reduced in float32.

    Under ``jax.jit`` with the batch sharded over a mesh, the batch mean/variance are over the
    global batch, i.e. this is synchronised BN across devices and hosts without extra code.
    """
    return nn.BatchNorm(
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
    """conv (no bias, symmetric padding) -> BatchNorm -> optional ReLU; names ``conv`` and ``bn``."""

    features: int
    kernel_size: int = 3
    strides: int = 1
    groups: int = 1
    relu: bool = True
    dtype: Dtype = jnp.float32
    kernel_init: Callable = kaiming_fan_in

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = conv2d(self.features, self.kernel_size, self.strides, groups=self.groups,
                   dtype=self.dtype, kernel_init=self.kernel_init, name="conv")(x)
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
    out_h, out_w = int(size[0]), int(size[1])
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
    """Global average pool keeping dims: (N, H, W, C) -> (N, 1, 1, C), reduced in float32."""
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(x.dtype)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """PyTorch ``MaxPool2d(3, stride=2, padding=1)`` (padding never wins the max)."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def avg_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """PyTorch ``AvgPool2d(3, stride=2, padding=1)`` with ``count_include_pad=True``."""
    return nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=True)
