"""Building blocks shared by every BiSeNet variant: one ConvBNReLU, one resize helper.

Module and parameter names follow the PyTorch layouts in ``../shared/docs/reference`` (``conv`` /
``bn`` inside a ConvBNReLU, Sequential indices ``"0"``, ``"1"`` ...), so that a Flax parameter path
joined with dots is the PyTorch ``state_dict`` key up to the leaf name (see
``bisenet_jax.convert.names``).
"""
from __future__ import annotations

import contextlib
import functools
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
) -> nn.Module:
    """A 2-D convolution with PyTorch's symmetric padding and float32 parameters.

    Grouped convolutions are a :class:`Conv2d` (the parameters of ``nn.Conv`` with
    ``feature_group_count=groups``, depthwise computed in a form that is fast on CPU); the rest ``nn.Conv``.
    """
    if groups > 1:
        return Conv2d(features, kernel_size, strides, groups=groups, use_bias=use_bias, dtype=dtype,
                      kernel_init=kernel_init, name=name)
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(strides, strides),
        padding=symmetric_padding(kernel_size),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=kernel_init,
        name=name,
    )


# ------------------------------------------------------------------------------------------------
# Depthwise convolution as a sum of shifted multiplies.
#
# Written by hand because XLA:CPU lowers depthwise convolutions (feature_group_count == channels)
# to a slow generic loop: at BiSeNetV2 / Xception39 sizes the forward pass is several times slower
# than PyTorch's, and the kernel gradient slower still. A k x k depthwise conv is k*k shifted,
# per-channel multiplies summed, which XLA fuses into one elementwise loop; the backward pass is the
# same form (a correlation with the flipped kernel for the input, k*k reductions for the kernel),
# given as a custom VJP so that autodiff does not materialise k*k padded copies of the gradient.
# On GPU and TPU XLA's own depthwise kernels are fast and are used instead.


_SHIFTED_SUM: list[bool | None] = [None]  # None: shifted sums on CPU only


@contextlib.contextmanager
def depthwise_implementation(shifted_sum: bool | None):
    """Within the block, models trace depthwise convolutions as shifted sums (True), XLA's grouped
    convolution (False) or by backend (None, the default). ``bisenet_jax.models.summary`` counts
    FLOPs with XLA's convolution, whose cost analysis skips the zero-padding taps."""
    previous, _SHIFTED_SUM[0] = _SHIFTED_SUM[0], shifted_sum
    try:
        yield
    finally:
        _SHIFTED_SUM[0] = previous


def _strided_taps(x: jax.Array, k: int, stride: int, out_h: int, out_w: int):
    """((i, j), x[:, i + stride*y, j + stride*x, :] for y < out_h, x < out_w) for the k x k taps, row-major."""
    n, c = x.shape[0], x.shape[3]
    for i in range(k):
        for j in range(k):
            yield (i, j), jax.lax.slice(x, (0, i, j, 0), (n, i + stride * (out_h - 1) + 1,
                                                         j + stride * (out_w - 1) + 1, c), (1, stride, stride, 1))


def _shifted_sum(x: jax.Array, w: jax.Array, stride: int, out_h: int, out_w: int) -> jax.Array:
    """sum_{i,j} x[:, i + stride*y, j + stride*x, :] * w[i, j, :] for y < out_h, x < out_w."""
    total = None
    for (i, j), tap in _strided_taps(x, w.shape[0], stride, out_h, out_w):
        term = tap * w[i, j]
        total = term if total is None else total + term
    return total


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise(x: jax.Array, w: jax.Array, stride: int, pad: int) -> jax.Array:
    return _depthwise_fwd(x, w, stride, pad)[0]


def _out_size(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def _expand(x: jax.Array, multiplier: int) -> jax.Array:
    # Output channel o of a grouped conv with one input channel per group reads input channel o // m.
    return x if multiplier == 1 else jnp.repeat(x, multiplier, axis=-1)


def _depthwise_fwd(x, w, stride, pad):
    k, multiplier = w.shape[0], w.shape[-1] // x.shape[-1]
    n, h, wd, c = x.shape
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    y = _shifted_sum(_expand(xp, multiplier), w, stride, _out_size(h, k, stride, pad), _out_size(wd, k, stride, pad))
    return y, (xp, w)


def _depthwise_bwd(stride, pad, residuals, g):
    xp, w = residuals
    k, c = w.shape[0], xp.shape[-1]
    multiplier = w.shape[-1] // c
    hp, wp = xp.shape[1], xp.shape[2]
    out_h, out_w = g.shape[1], g.shape[2]
    xe = _expand(xp, multiplier)
    # Kernel: one reduction per tap.
    taps = [jnp.sum(tap * g, axis=(0, 1, 2)) for _, tap in _strided_taps(xe, k, stride, out_h, out_w)]
    dw = jnp.stack(taps).reshape(w.shape).astype(w.dtype)
    # Input: the gradient, dilated by the stride and padded by k - 1 (plus the rows and columns the
    # forward pass never read), correlated with the flipped kernel.
    extra_h = hp - ((out_h - 1) * stride + k)
    extra_w = wp - ((out_w - 1) * stride + k)
    zero = jnp.zeros((), g.dtype)
    gp = jax.lax.pad(g, zero, ((0, 0, 0), (k - 1, k - 1 + extra_h, stride - 1),
                               (k - 1, k - 1 + extra_w, stride - 1), (0, 0, 0)))
    dxp = _shifted_sum(gp, w[::-1, ::-1], 1, hp, wp)
    if multiplier > 1:
        dxp = dxp.reshape(*dxp.shape[:3], c, multiplier).sum(-1)
    dx = dxp[:, pad:hp - pad, pad:wp - pad, :]
    return dx.astype(xp.dtype), dw


_depthwise.defvjp(_depthwise_fwd, _depthwise_bwd)


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int = 1, pad: int | None = None,
                   use_shifted_sum: bool | None = None) -> jax.Array:
    """Depthwise (``groups == channels``) convolution of NHWC ``x`` with a ``(k, k, 1, C * m)`` kernel.

    The result equals ``lax.conv_general_dilated(..., feature_group_count=C)`` with symmetric padding
    ``pad`` (default ``k // 2``). ``use_shifted_sum`` picks the implementation (default: shifted
    sums on CPU, XLA's convolution elsewhere; see :func:`depthwise_implementation`).
    """
    k = kernel.shape[0]
    pad = k // 2 if pad is None else pad
    if kernel.shape[2] != 1 or kernel.shape[3] % x.shape[-1]:
        raise ValueError(f"depthwise_conv: kernel {kernel.shape} does not fit {x.shape[-1]} input channels "
                         "(expected (k, k, 1, channels * multiplier))")
    if use_shifted_sum is None:
        use_shifted_sum = _SHIFTED_SUM[0]
    if use_shifted_sum is None:
        use_shifted_sum = jax.default_backend() == "cpu"
    if use_shifted_sum:
        return _depthwise(x, kernel.reshape(k, k, kernel.shape[3]), stride, pad)
    return _xla_conv(x, kernel, stride, ((pad, pad), (pad, pad)), x.shape[-1])


def _xla_conv(x: jax.Array, kernel: jax.Array, stride: int, padding, groups: int = 1) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


class Conv2d(nn.Module):
    """``nn.Conv`` with PyTorch's symmetric padding and ``feature_group_count=groups``: the same
    parameter names and shapes (``kernel`` ``(k, k, in / groups, features)``, ``bias``), computed
    with :func:`depthwise_conv` when depthwise."""

    features: int
    kernel_size: int = 3
    strides: int = 1
    groups: int = 1
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    kernel_init: Callable = kaiming_fan_in

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels, k = x.shape[-1], self.kernel_size
        if channels % self.groups or self.features % self.groups:
            raise ValueError(f"{self.name}: {channels} input and {self.features} output channels are not both "
                             f"divisible by groups={self.groups}")
        kernel = self.param("kernel", self.kernel_init, (k, k, channels // self.groups, self.features), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if self.groups == channels:
            y = depthwise_conv(x, kernel, self.strides)
        else:
            y = _xla_conv(x, kernel, self.strides, symmetric_padding(k), self.groups)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
        return y


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


# Written by hand: XLA:CPU runs the gradient of ``nn.max_pool`` (select-and-scatter) slowly: about
# 0.35 s of a 2.4 s BiSeNetV1-R18 train step at batch 8, 256x320. Nine strided slices and a running
# max, with a backward pass that sends each output's gradient to the first maximum of its window
# (PyTorch's choice among ties), are elementwise loops XLA fuses.
@jax.custom_vjp
def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """PyTorch ``MaxPool2d(3, stride=2, padding=1)`` (padding never wins the max); NHWC."""
    return _max_pool_fwd(x)[0]


def _max_pool_fwd(x):
    h, w = x.shape[1], x.shape[2]
    out_h, out_w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    y = None
    for _, tap in _strided_taps(xp, 3, 2, out_h, out_w):
        y = tap if y is None else jnp.maximum(y, tap)
    return y, (xp, y)


def _max_pool_bwd(residuals, g):
    xp, y = residuals
    hp, wp = xp.shape[1], xp.shape[2]
    out_h, out_w = y.shape[1], y.shape[2]
    zero = jnp.zeros((), g.dtype)
    taken = jnp.zeros(y.shape, bool)
    dxp = jnp.zeros(xp.shape, g.dtype)
    for (i, j), tap in _strided_taps(xp, 3, 2, out_h, out_w):
        first = (tap == y) & ~taken
        taken = taken | first
        # The transpose of the strided slice: back to the padded grid with interior zeros.
        dxp = dxp + jax.lax.pad(jnp.where(first, g, zero), zero,
                                ((0, 0, 0), (i, hp - i - 2 * (out_h - 1) - 1, 1),
                                 (j, wp - j - 2 * (out_w - 1) - 1, 1), (0, 0, 0)))
    return (dxp[:, 1:-1, 1:-1, :],)


max_pool_3x3_s2.defvjp(_max_pool_fwd, _max_pool_bwd)


def avg_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """PyTorch ``AvgPool2d(3, stride=2, padding=1)`` with ``count_include_pad=True``."""
    return nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=True)
