"""Building blocks shared by every BiSeNet variant: one convolution, one ConvBNReLU, one resize helper.

Module and parameter names follow the PyTorch ``state_dict`` layouts (``conv`` / ``bn`` inside a
ConvBNReLU, Sequential indices ``"0"``, ``"1"`` ...), so that a Flax parameter path joined with
dots is the PyTorch key up to the leaf name; see ``bisenet_jax/convert/names.py``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np

from bisenet_jax.models.kernels import XLA_KERNELS, Kernels

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
    every feature by half a pixel against the PyTorch models.) ``padding`` overrides it for an input
    that is already padded (``kernels.pad_shared``).

    A depthwise convolution (``groups`` == input channels > 1) is computed by
    ``kernels.depthwise_conv`` (see :mod:`bisenet_jax.models.kernels`), a nearest x2 upsampling
    followed by a dense 3x3 one by ``kernels.upsample2_conv3x3``; every other one by ``kernels.conv``.
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    groups: int = 1
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    kernel_init: Callable = kaiming_fan_in
    kernels: Kernels = XLA_KERNELS
    padding: int | None = None  # zero padding on every side; None: kernel_size // 2

    @nn.compact
    def __call__(self, x: jax.Array, upsample_to: Sequence[int] | None = None) -> jax.Array:
        """``upsample_to`` (H, W): resize ``x`` to it with ``resize(..., "nearest")`` first; at exactly
        twice the input size a dense 3x3 stride-1 convolution computes both in one
        ``kernels.upsample2_conv3x3``."""
        channels, k = x.shape[-1], self.kernel_size
        pad = k // 2 if self.padding is None else self.padding
        if upsample_to is not None and pad != k // 2:
            raise ValueError(f"{self.name}: padding={self.padding} with upsample_to: the upsampled input is "
                             f"padded by the convolution, kernel_size // 2 = {k // 2}")
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
                y = self.kernels.depthwise_conv(x, kernel, self.strides, pad)
            else:
                y = self.kernels.conv(x, kernel, self.strides, pad, self.groups)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
        return y


def _is_double(size: Sequence[Any], target: Sequence[Any]) -> bool:
    """Whether ``target`` is exactly twice ``size`` in both dims, for concrete sizes only (symbolic
    dims under jax.export take the general path, which computes the same function)."""
    dims = (*size, *target)
    return all(isinstance(d, int) for d in dims) and tuple(target) == (2 * size[0], 2 * size[1])


def _batch_statistics(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and biased variance of ``x`` over every axis but the last, in float32 (or
    wider), two-pass as PyTorch and flax's ``use_fast_variance=False`` compute them: the one-pass
    E[x^2] - E[x]^2 loses precision when |mean| >> std, and then differs between data-parallel
    layouts that only change the order of the sums."""
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    return mean, jnp.mean(jnp.square(x - mean), axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def normalize_batch(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float):
    """Training-mode BatchNorm over every axis but the last: ``(y, mean, var)`` with
    ``y = (x - mean) / sqrt(var + epsilon) * scale + bias`` in float32 (or wider; the caller casts)
    and the batch ``mean`` and biased ``var``, flax's ``BatchNorm`` function.

    Written with its gradient by hand (the textbook one of PyTorch's and cuDNN's BatchNorm backward,
    ``dx = scale / std * (g - mean(g) - x_hat * mean(g * x_hat))``): autodiff through the two-pass
    variance gives XLA a chain of broadcasts and reductions that it runs as more passes over the
    activation. On the 2-core CPU of docs/profile.md, the V1-X39 train step's BatchNorm backward
    took 53 ms of thread time per step against 82 ms through flax's BatchNorm. The gradients of
    ``mean`` and ``var`` are included (they are zero in training, where only the running statistics
    read them). Tested against autodiff of flax's BatchNorm in tests/models/test_layers.py."""
    return _normalize_batch_fwd(x, scale, bias, epsilon)[0]


def _normalize_batch_fwd(x, scale, bias, epsilon):
    mean, var = _batch_statistics(x)
    rstd = jax.lax.rsqrt(var + epsilon)
    y = (x - mean) * (rstd * scale) + bias
    return (y, mean, var), (x, mean, rstd, scale)


def _normalize_batch_bwd(epsilon, residuals, cotangents):
    x, mean, rstd, scale = residuals
    g, g_mean, g_var = cotangents
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    centred = x.astype(mean.dtype) - mean
    x_hat = centred * rstd
    g_bias = jnp.sum(g, axes)
    g_scale = jnp.sum(g * x_hat, axes)
    g_x = (scale * rstd) * (g - g_bias / n - x_hat * (g_scale / n)) + (g_mean + 2.0 * g_var * centred) / n
    return g_x.astype(x.dtype), g_scale.astype(scale.dtype), g_bias.astype(scale.dtype)


normalize_batch.defvjp(_normalize_batch_fwd, _normalize_batch_bwd)


class BatchNorm(nn.BatchNorm):
    """Flax's BatchNorm (its parameters, statistics and inference), with two changes in training:

    - PyTorch's running variance, the batch variance with Bessel's correction. PyTorch's BatchNorm
      normalises with the biased batch variance (as flax does) but stores the unbiased one,
      ``var * n / (n - 1)``, in ``running_var``; flax stores the biased one and has no option for
      the other. For a convolution's activations (n = batch * height * width) the two are the same
      to a few ppm, but BiSeNet's attention BNs (V1's ARMs, V2's context-embedding block) normalise
      (N, 1, 1, C) vectors, where n is the batch size: at batch 8 flax's running variance is 12.5%
      lower than PyTorch's, and a model trained here would evaluate (and export) differently from
      the same training in PyTorch.
    - The normalisation is :func:`normalize_batch` (same function, a hand-written gradient).

    Training supports the options ``batch_norm`` sets (last axis, scale and bias, no mask, no
    ``axis_name``: under ``jax.jit`` the mean is over the global batch already).
    """

    @nn.compact
    def __call__(self, x, use_running_average=None, *, mask=None):
        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        if use_running_average:
            # flax refuses the flag given both to the constructor and the call: pass it only if it came from the call.
            return super().__call__(x, None if self.use_running_average is not None else True, mask=mask)
        if mask is not None or self.axis not in (-1, x.ndim - 1) or self.axis_name is not None \
                or not (self.use_scale and self.use_bias):
            raise ValueError(f"{self.name}: training BatchNorm supports the last axis with scale and bias, without "
                             "mask or axis_name")
        channels = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((channels,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((channels,), jnp.float32))
        scale = self.param("scale", self.scale_init, (channels,), self.param_dtype)
        bias = self.param("bias", self.bias_init, (channels,), self.param_dtype)
        wide = jnp.promote_types(jnp.promote_types(x.dtype, jnp.float32), self.param_dtype)
        y, mean, var = normalize_batch(x, scale.astype(wide), bias.astype(wide), self.epsilon)
        if not self.is_initializing():
            n = x.size // channels  # values per channel (the global batch under jit's sharding)
            # PyTorch: running = m * running + (1 - m) * batch, with the unbiased batch variance.
            unbiased = var * (n / (n - 1)) if n > 1 else var
            # Kept in their own dtype (float32): a float64 model's statistics would otherwise turn float64
            # after its first step, which changes the state's types (a second compilation of the step).
            ra_mean.value = (self.momentum * ra_mean.value + (1 - self.momentum) * mean).astype(ra_mean.value.dtype)
            ra_var.value = (self.momentum * ra_var.value + (1 - self.momentum) * unbiased).astype(ra_var.value.dtype)
        return y.astype(self.dtype or jnp.result_type(x, scale, bias))


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
        if all(isinstance(d, int) for d in (h, w, out_h, out_w)):
            with jax.named_scope("bilinear_resize"):  # its ops' op_name: the profile's resize category
                return _bilinear_by_matmuls(x, out_h, out_w)
        return jax.image.resize(x, (n, out_h, out_w, c), method="bilinear", antialias=False)
    raise ValueError(f"resize: unknown method {method!r}; expected 'nearest' or 'bilinear'")


@functools.lru_cache(maxsize=64)
def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 weights of 1-D linear interpolation with half-pixel centres:
    source = (dst + 0.5) * in / out - 0.5, clamped at 0, upper neighbour clamped at in - 1 (PyTorch's
    ``align_corners=False``; no antialiasing, so downsampling reads two pixels as PyTorch does)."""
    src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    frac = src - low
    matrix = np.zeros((out_size, in_size))
    np.add.at(matrix, (np.arange(out_size), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(out_size), high), frac)
    matrix.setflags(write=False)
    return matrix


def _bilinear_by_matmuls(x: jax.Array, out_h: int, out_w: int) -> jax.Array:
    """Bilinear resize of NHWC ``x`` as two matmuls with :func:`bilinear_matrix`, ordered so that
    nothing at the output's size is transposed.

    ``jax.image.resize`` computes the same two contractions (equal to float32 rounding, tested), but
    as einsums whose operand and output layouts XLA meets with transposes of the full-size result
    and, in the backward pass, of its gradient: V1's three heads at 256x320 spent ~250 ms of thread
    time per train step in those copies on the 2-core CPU (docs/profile.md). Here the width is
    resized first, at the input's height, where the one transpose is small (out_w / w times the
    input), and the height last as a batched matmul whose output is already NHWC.
    """
    n, h, w, c = x.shape
    highest = jax.lax.Precision.HIGHEST  # float32 weights on TPU/GPU too, as jax.image.resize
    if out_w != w:
        mw = jnp.asarray(bilinear_matrix(w, out_w), x.dtype)
        x = jax.lax.dot_general(x, mw, (((2,), (1,)), ((), ())), precision=highest)  # (n, h, c, out_w)
        x = jnp.transpose(x, (0, 1, 3, 2))  # (n, h, out_w, c): the input's height
    if out_h != h:
        mh = jnp.broadcast_to(jnp.asarray(bilinear_matrix(h, out_h), x.dtype), (n, out_h, h))
        x = jax.lax.dot_general(mh, x.reshape(n, h, out_w * c), (((2,), (1,)), ((0,), (0,))),
                                precision=highest).reshape(n, out_h, out_w, c)
    return x


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
