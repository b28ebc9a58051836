"""Backend-specific kernels: XLA's own ops and the CPU forms that replace them, chosen once per backend.

Six ops of BiSeNet training have two forms with the same values and gradients:

- ``depthwise_conv``: XLA's grouped convolution, or (CPU) a sum of k*k shifted per-channel
  multiplies with a hand-written gradient. XLA:CPU lowers depthwise convolutions to a slow generic
  loop, and their kernel gradient is slower still; shifted multiplies are elementwise work XLA
  fuses. The gradient is a custom VJP so that autodiff does not materialise k*k padded copies; its
  kernel part is one variadic reduction over the k*k taps (see ``_shifted_sum_depthwise_bwd``).
- ``max_pool_3x3_s2``: ``nn.max_pool``, or (CPU) the same forward with a hand-written gradient to
  the first maximum of each window: the forward records each window's first maximum as an index and
  the gradient is one scatter-add; XLA:CPU runs the gradient of the library op (select-and-scatter)
  slowly.
- ``kth_largest`` (OHEM's threshold): a sort, or (CPU) a bisection over float bit patterns with
  one counting pass per step: XLA:CPU sorts the hundreds of thousands of per-pixel losses slowly.
- ``upsample2_conv3x3`` (PyTorch's ``nn.Upsample(scale_factor=2)`` then a 3x3 convolution, in
  BiSeNetV1's context path and BiSeNetV2's auxiliary heads): the upsampled tensor and a convolution
  over it, or (CPU) the same function as one 2x2 convolution at the input's resolution with four
  output phases (2.25x fewer multiplies, no 4x-sized intermediate), with a hand-written kernel
  gradient: XLA:CPU runs the kernel gradient of a 2x2 convolution 10-30x slower than a 3x3 one.
- ``conv`` (every other convolution): XLA's, or (CPU, dense with at least 8 input channels) the
  same forward and input gradient with the kernel gradient's operand transposed a block of rows at
  a time. XLA:CPU's kernel-gradient convolution reads the activation with the batch innermost, and
  XLA writes that copy with one whole-array transpose at under 2 GB/s; done in blocks of rows of
  about 512 KB it takes half the time (see ``_batch_minor``). A 1x1 kernel without padding needs
  no copy: its kernel gradient is one matmul over the activation as it lies.
- ``pad_shared`` (a residual block's input, read by a depthwise convolution and by the identity
  shortcut's add): nothing (each convolution pads its own input), or (CPU) the input zero-padded once
  behind an optimization barrier, the convolution reading that array unpadded and the add its
  interior. XLA:CPU fuses an activation that only elementwise ops read into each of them, so in
  Xception39's stages, where every block's output reaches the next block only through the (CPU)
  depthwise's shifted sums and the residual add, each fusion recomputed the outputs of all earlier
  blocks of the stage from their pointwise convolutions; a padded array that the convolution and the
  add both read is materialised once and ends each chain at one block (docs/profile.md, session 47).

:data:`XLA_KERNELS` holds the library ops (what GPU and TPU get), :data:`CPU_KERNELS` the CPU forms.
A model takes its bundle as the module attribute ``kernels``, as flax's ImageNet ResNet takes
``conv``; ``create_model(..., kernels="auto")`` resolves "auto" with :func:`default_kernels` once,
when the model is built.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class Kernels:
    """A named bundle of op implementations; every bundle computes the same functions.

    - ``depthwise_conv(x, kernel, stride=1, pad=k // 2)``: NHWC ``x`` (N, H, W, C), ``kernel``
      (k, k, 1, C * m), symmetric zero padding ``pad``; output channel ``o`` reads input channel ``o // m``.
    - ``max_pool_3x3_s2(x)``: PyTorch ``MaxPool2d(3, stride=2, padding=1)`` on NHWC ``x``.
    - ``kth_largest(values, k)``: the k-th largest of the 1-D non-negative float32 ``values``
      (``0 <= k <= values.size``, ``k`` may be traced; ``+inf`` for ``k == 0``); not differentiated.
    - ``upsample2_conv3x3(x, kernel)``: ``x`` (N, H, W, C) with every pixel repeated 2x2 (nearest
      x2), then convolved with the dense ``kernel`` (3, 3, C, features), stride 1, padding 1:
      (N, 2H, 2W, features). ``kernel`` may be float32 for a lower-precision ``x``.
    - ``conv(x, kernel, stride, pad, groups=1)``: :func:`grouped_conv`, NHWC ``x`` and HWIO ``kernel``
      of one dtype, symmetric zero padding ``pad``.
    - ``pad_shared(x, pad)``: ``(xs, p)`` for an NHWC ``x`` that a convolution with symmetric zero
      padding ``pad`` reads beside other ops: the convolution reads ``xs`` with padding ``p``, the
      others ``crop_spatial(xs, pad - p)`` (which is ``x``); ``(x, pad)`` or ``(padded x, 0)``.
    """

    name: str
    depthwise_conv: Callable[..., jax.Array] = dataclasses.field(repr=False)
    max_pool_3x3_s2: Callable[[jax.Array], jax.Array] = dataclasses.field(repr=False)
    kth_largest: Callable[[jax.Array, jax.Array], jax.Array] = dataclasses.field(repr=False)
    upsample2_conv3x3: Callable[[jax.Array, jax.Array], jax.Array] = dataclasses.field(repr=False)
    conv: Callable[..., jax.Array] = dataclasses.field(repr=False)
    pad_shared: Callable[[jax.Array, int], tuple[jax.Array, int]] = dataclasses.field(repr=False)

    # custom_vjp functions can be neither deep-copied nor pickled; a model holding a bundle can.
    def __deepcopy__(self, memo) -> Kernels:
        return self  # immutable

    def __reduce__(self):
        if _BY_NAME.get(self.name) is self:
            return get_kernels, (self.name,)
        return Kernels, (self.name, self.depthwise_conv, self.max_pool_3x3_s2, self.kth_largest,
                         self.upsample2_conv3x3, self.conv, self.pad_shared)


def check_depthwise_kernel(x: jax.Array, kernel: jax.Array) -> None:
    if kernel.shape[2] != 1 or kernel.shape[3] % x.shape[-1]:
        raise ValueError(f"depthwise_conv: kernel {kernel.shape} does not fit {x.shape[-1]} input channels "
                         "(expected (k, k, 1, channels * multiplier))")


# ------------------------------------------------------------------------------------------------
# XLA's own ops


def grouped_conv(x: jax.Array, kernel: jax.Array, stride: int, pad: int, groups: int = 1) -> jax.Array:
    """NHWC x HWIO convolution with symmetric padding ``pad`` and ``feature_group_count=groups``."""
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


def xla_depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int = 1, pad: int | None = None) -> jax.Array:
    check_depthwise_kernel(x, kernel)
    pad = kernel.shape[0] // 2 if pad is None else pad
    return grouped_conv(x, kernel, stride, pad, groups=x.shape[-1])


def crop_spatial(x: jax.Array, crop: int) -> jax.Array:
    """``x`` (NHWC) without ``crop`` rows and columns on every side: the inverse of a zero padding."""
    return x if crop == 0 else x[:, crop:x.shape[1] - crop, crop:x.shape[2] - crop, :]


def unpadded_shared(x: jax.Array, pad: int) -> tuple[jax.Array, int]:
    """``(x, pad)``: each consumer pads (or fuses) ``x`` itself, as XLA's ops do on GPU and TPU."""
    return x, pad


def xla_max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def check_upsample_kernel(x: jax.Array, kernel: jax.Array) -> None:
    if kernel.shape[:3] != (3, 3, x.shape[-1]):
        raise ValueError(f"upsample2_conv3x3: kernel {kernel.shape} does not fit {x.shape[-1]} input channels "
                         "(expected (3, 3, channels, features))")


def repeat_upsample2_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    check_upsample_kernel(x, kernel)
    return grouped_conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2), kernel.astype(x.dtype), 1, 1)


def sorted_kth_largest(values: jax.Array, k: jax.Array) -> jax.Array:
    # A full sort: ``lax.top_k`` needs a static k, and OHEM's (a count of valid pixels) is traced.
    ascending = jnp.sort(values.astype(jnp.float32))
    kth = ascending[jnp.clip(values.shape[0] - k, 0, values.shape[0] - 1)]
    return jnp.where(k >= 1, kth, jnp.inf)


# ------------------------------------------------------------------------------------------------
# CPU forms


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


def _out_size(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def _pad_spatial(x: jax.Array, pad: int) -> jax.Array:
    """Zero-pads the two spatial axes of the NHWC ``x`` by ``pad`` on every side."""
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _expand(x: jax.Array, multiplier: int) -> jax.Array:
    # Output channel o of a grouped conv with one input channel per group reads input channel o // m.
    return x if multiplier == 1 else jnp.repeat(x, multiplier, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _shifted_sum_depthwise(x: jax.Array, w: jax.Array, stride: int, pad: int) -> jax.Array:
    # Not differentiated (inference): no barrier, XLA may fuse the padding into the sum.
    return _padded_shifted_sum(_pad_spatial(x, pad), w, stride)


def _padded_shifted_sum(xp: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """The depthwise convolution of the already padded ``xp`` (no further padding)."""
    k, multiplier = w.shape[0], w.shape[-1] // xp.shape[-1]
    out_h, out_w = _out_size(xp.shape[1], k, stride, 0), _out_size(xp.shape[2], k, stride, 0)
    return _shifted_sum(_expand(xp, multiplier), w, stride, out_h, out_w)


def _shifted_sum_depthwise_fwd(x, w, stride, pad):
    # The barrier keeps the padded input one materialised array. Without it XLA reads the centre
    # tap, slice(pad(x)), as x itself, and where x is a residual block's output (Xception39's sep1
    # layers) the kernel gradient's reduction recomputed that output inside its loop from every
    # earlier block's BatchNorm and ReLU: the later the block, the longer the chain (X39's depthwise
    # kernel gradients 60 -> 37 ms of thread time a step; docs/profile.md, session 45).
    xp = jax.lax.optimization_barrier(_pad_spatial(x, pad))
    return _padded_shifted_sum(xp, w, stride), (xp, w)


def _shifted_sum_depthwise_bwd(stride, pad, residuals, g):
    xp, w = residuals
    k, c = w.shape[0], xp.shape[-1]
    multiplier = w.shape[-1] // c
    hp, wp = xp.shape[1], xp.shape[2]
    out_h, out_w = g.shape[1], g.shape[2]
    xe = _expand(xp, multiplier)
    # Kernel: the k*k per-tap sums as one variadic reduction, so that XLA reads the gradient once and
    # fuses the taps' slices and products into the reduction's loop. Separate jnp.sum's became YNNPACK
    # reductions under the train step's "reduce" fusion option (xla_flags.py), and YNNPACK fusions do
    # not take slices: each tap was first copied out (X39 step: 47 such copies). The reduction
    # keeps the width (batch and rows summed, (W, C) per tap) and a second, small one sums that:
    # XLA's loop for the full reduction to (C,) ran 1.5-3x slower (8x32x40x128: 8.5 against 3.1 ms,
    # jitted alone; docs/profile.md). Accumulated in float32 at least (as jnp.sum does for bfloat16).
    acc = jnp.promote_types(jnp.promote_types(xe.dtype, g.dtype), jnp.float32)
    products = [tap.astype(acc) * g.astype(acc) for _, tap in _strided_taps(xe, k, stride, out_h, out_w)]
    zeros = [jnp.zeros((), acc)] * len(products)
    rows = jax.lax.reduce(products, zeros, lambda a, b: [u + v for u, v in zip(a, b)], (0, 1))
    dw = jnp.stack([r.sum(axis=0) for r in rows]).reshape(w.shape).astype(w.dtype)
    # Input: the gradient, dilated by the stride and padded by k - 1 (plus the rows and columns the
    # forward pass never read), correlated with the flipped kernel.
    extra_h = hp - ((out_h - 1) * stride + k)
    extra_w = wp - ((out_w - 1) * stride + k)
    zero = jnp.zeros((), g.dtype)
    gp = jax.lax.pad(g, zero, ((0, 0, 0), (k - 1, k - 1 + extra_h, stride - 1),
                               (k - 1, k - 1 + extra_w, stride - 1), (0, 0, 0)))
    dxp = _shifted_sum(gp, w[::-1, ::-1], 1, hp, wp)
    if multiplier > 1:
        # Output channel c * m + j read input channel c: its gradient adds the m channels, as m
        # slices in one elementwise loop. A sum over the minor axis of (..., C, m) went to YNNPACK
        # under the train step's "reduce" fusion option and cost 2-10x more (docs/profile.md, session 44).
        dxp = dxp.reshape(*dxp.shape[:3], c, multiplier).astype(jnp.promote_types(dxp.dtype, jnp.float32))
        dxp = functools.reduce(jnp.add, [dxp[..., j] for j in range(multiplier)])
    dx = dxp[:, pad:hp - pad, pad:wp - pad, :]
    return dx.astype(xp.dtype), dw


_shifted_sum_depthwise.defvjp(_shifted_sum_depthwise_fwd, _shifted_sum_depthwise_bwd)


def shifted_sum_depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int = 1, pad: int | None = None
                               ) -> jax.Array:
    check_depthwise_kernel(x, kernel)
    k = kernel.shape[0]
    pad = k // 2 if pad is None else pad
    return _shifted_sum_depthwise(x, kernel.reshape(k, k, kernel.shape[3]), stride, pad)


# The scatter's indices are int32 positions in one image's (H, W, C), plus one out-of-range value.
_MAX_SCATTER_INDEX = 2**31 - 2


def scatter_max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """XLA's max pool forward; the gradient goes to each window's first (row-major) maximum, PyTorch's
    choice for ties, by one scatter-add of the output gradient at indices the forward pass records.
    An image of more than ``_MAX_SCATTER_INDEX`` elements (int32 indices) takes XLA's op."""
    if x.shape[1] * x.shape[2] * x.shape[3] > _MAX_SCATTER_INDEX:
        return xla_max_pool_3x3_s2(x)
    return _scatter_max_pool(x, x.shape[1:3])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _scatter_max_pool(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    return xla_max_pool_3x3_s2(x)


def _first_maximum_index(x: jax.Array) -> jax.Array:
    """For each 3x3 / 2 window (padding 1) of NHWC ``x``, the index of its first maximum in its image
    flattened (H, W, C), as int32 of the pooled shape; ``H * W * C`` (out of range: the scatter drops
    it) where that maximum is the padding: a window of the first row or column whose values in the
    image are all -inf (or NaN), so that the padding's tap 0 is never beaten.

    The first maximum is a running strict ">" over the nine taps in row-major order, on the input
    itself, not a comparison with the forward's output: inside one jitted step XLA may compute the
    pooled activation in two fusions whose last bits differ, and a window whose taps all missed the
    forward's maximum would lose its gradient (it did, for ~0.1% of the windows of a ResNet stem, in
    an early form of this op). Each tap is a stride-2 slice of the input padded with -inf."""
    n, h, w, c = x.shape
    out_h, out_w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    xp = jnp.pad(x, ((0, 0), (1, 2 * out_h + 1 - h), (1, 2 * out_w + 1 - w), (0, 0)), constant_values=-jnp.inf)
    offsets = [(di, dj) for di in range(3) for dj in range(3)]
    taps = [xp[:, di:di + 2 * out_h:2, dj:dj + 2 * out_w:2] for di, dj in offsets]
    best, best_tap = taps[0], jnp.zeros(taps[0].shape, jnp.int32)
    for t in range(1, 9):
        larger = taps[t] > best
        best, best_tap = jnp.where(larger, taps[t], best), jnp.where(larger, t, best_tap)
    shape = best_tap.shape
    row = 2 * jax.lax.broadcasted_iota(jnp.int32, shape, 1) + best_tap // 3 - 1
    col = 2 * jax.lax.broadcasted_iota(jnp.int32, shape, 2) + best_tap % 3 - 1
    channel = jax.lax.broadcasted_iota(jnp.int32, shape, 3)
    inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
    return jnp.where(inside, (row * w + col) * c + channel, h * w * c)


def _scatter_max_pool_fwd(x, size):
    return xla_max_pool_3x3_s2(x), _first_maximum_index(x)


def _scatter_max_pool_bwd(size, index, g):
    # One scatter-add per image of the (N, out_h, out_w, C) gradient into the zeroed input: an
    # element that is the first maximum of several overlapping windows receives their sum. XLA's
    # own gradient of the pooling (select-and-scatter) ran 3-10x slower on CPU, and the earlier
    # form of this op, which routed the gradient through the input's four stride-2 phases with
    # pads, adds and an interleave, 2-4x slower (docs/profile.md, session 45).
    (h, w), (n, c) = size, (g.shape[0], g.shape[3])
    per_image = jnp.zeros((n, h * w * c), g.dtype)
    scatter = jax.vmap(lambda zeros, i, u: zeros.at[i].add(u, mode="drop"))
    return (scatter(per_image, index.reshape(n, -1), g.reshape(n, -1)).reshape(n, h, w, c),)


_scatter_max_pool.defvjp(_scatter_max_pool_fwd, _scatter_max_pool_bwd)


# Output row 2i + a of "nearest x2, then a 3x3 conv with padding 1" reads upsampled rows 2i + a - 1,
# 2i + a and 2i + a + 1, i.e. input rows (i - 1, i, i) for a = 0 and (i, i, i + 1) for a = 1. So each
# output phase (a, b) is a 2x2 convolution of the input with kernel taps summed: _PHASE_TAPS[a, p, y]
# = 1 when tap row y of the 3x3 kernel lands on row p of phase a's 2x2 window, which starts at input
# row i - 1 + a. Padded by one pixel on every side, the input gives all four phases from one 2x2
# convolution with 4 * features outputs, phase (a, b) read at offset (a, b).
_PHASE_TAPS = (((1, 0, 0), (0, 1, 1)), ((1, 1, 0), (0, 0, 1)))


def _valid_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return grouped_conv(x, kernel.astype(x.dtype), 1, 0)


@jax.custom_vjp
def _conv2x2_valid(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VALID 2x2 convolution; ``kernel`` may be wider than ``x`` (float32 weights of a bfloat16
    model): it is cast to ``x.dtype`` here and its gradient comes back in its own dtype."""
    return _valid_conv(x, kernel)


def _conv2x2_valid_fwd(x, kernel):
    return _valid_conv(x, kernel), (x, kernel)


def _conv2x2_valid_bwd(residuals, g):
    # XLA's input gradient (the transpose of the convolution in x: fast), and the kernel gradient as
    # one matmul: XLA:CPU's own kernel-gradient convolution for a 2x2 kernel takes 10-30x longer.
    # With the images flattened to rows of one (N * H * W, C) matrix, tap (p, q) of output pixel r
    # is input row r + p * W + q (W: the input's width), so the four taps are four row-shifted
    # views of that matrix, side by side as (rows, 4 * C), against the gradient zero-padded to the
    # input's size, whose extra row and column cancel the views' wrap into the next row or image.
    # Slicing each tap as a (N, h, w, C) window instead made XLA write every window transposed, channels
    # first (V2's aux2 at 192x256: 24 ms of thread time per tap, against 23 ms for all of this).
    x, kernel = residuals
    (dx,) = jax.linear_transpose(lambda x: _valid_conv(x, kernel), x)(g)
    n, h, w, c = x.shape
    features = g.shape[-1]
    rows = n * h * w
    gp = jnp.pad(g, ((0, 0), (0, h - g.shape[1]), (0, w - g.shape[2]), (0, 0))).reshape(rows, features)
    xf = jnp.pad(x.reshape(rows, c), ((0, w + 1), (0, 0)))
    taps = jnp.concatenate([xf[p * w + q:p * w + q + rows] for p in (0, 1) for q in (0, 1)], axis=1)
    accumulate = jnp.promote_types(jnp.promote_types(kernel.dtype, x.dtype), jnp.float32)
    dk = jax.lax.dot_general(taps, gp, (((0,), (0,)), ((), ())), preferred_element_type=accumulate)
    return dx, dk.reshape(2, 2, c, features).astype(kernel.dtype)


_conv2x2_valid.defvjp(_conv2x2_valid_fwd, _conv2x2_valid_bwd)


def _phase_kernel(kernel: jax.Array) -> jax.Array:
    """(2, 2, in, 2, 2, out) = (p, q, i, a, b, o): the sum of the 3x3 taps (y, x) with
    ``_PHASE_TAPS[a][p][y]`` and ``_PHASE_TAPS[b][q][x]`` set, as static sums of kernel slices.

    The same as ``einsum("apy,bqx,yxio->pqiabo", taps, taps, kernel)`` with the 0/1 tap matrices,
    but as adds: XLA:CPU hands that einsum to a library matmul with contractions of 3 and outputs of
    4, which took 9 ms of thread time per call in V1-X39's 1x512x1024 forward (docs/profile.md),
    against well under a millisecond for these adds.
    """
    def tap_sum(a: int, b: int, p: int, q: int) -> jax.Array:
        taps = [kernel[y, x] for y in range(3) if _PHASE_TAPS[a][p][y] for x in range(3) if _PHASE_TAPS[b][q][x]]
        return functools.reduce(jnp.add, taps)

    sums = [tap_sum(a, b, p, q) for p in (0, 1) for q in (0, 1) for a in (0, 1) for b in (0, 1)]
    return jnp.stack(sums).reshape(2, 2, 2, 2, *kernel.shape[2:]).transpose(0, 1, 4, 2, 3, 5)


def phase_upsample2_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    # The phase kernel (sums of up to four taps) is built in the wider of the kernel's dtype (the
    # float32 weights) and x's, and cast to x's only for the convolution.
    check_upsample_kernel(x, kernel)
    kernel = kernel.astype(jnp.promote_types(kernel.dtype, x.dtype))
    n, h, w, c = x.shape
    features = kernel.shape[-1]
    phase_kernel = _phase_kernel(kernel).reshape(2, 2, c, 4 * features)
    z = _conv2x2_valid(_pad_spatial(x, 1), phase_kernel)
    z = z.reshape(n, h + 1, w + 1, 2, 2, features)
    rows = [jnp.stack([z[:, a:a + h, b:b + w, a, b] for b in (0, 1)], axis=3) for a in (0, 1)]  # (n, h, w, 2, f)
    return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, features)  # (n, h, a, w, b, f): interleaved


def barrier_padded_shared(x: jax.Array, pad: int) -> tuple[jax.Array, int]:
    """``(padded x, 0)``: ``x`` zero-padded once behind an optimization barrier. XLA:CPU drops the
    barrier before fusion, so it is no fusion boundary; what it does is keep the algebraic simplifier
    from reading ``crop_spatial(pad(x))`` as ``x``. The padded array then has a consumer that reads each
    element many times (the depthwise convolution's shifted sums) and is materialised, and the other
    consumers read it rather than recomputing ``x`` (see the module docstring)."""
    return jax.lax.optimization_barrier(_pad_spatial(x, pad)), 0


# Blocks of the activation transposed at a time for a kernel gradient: as many rows as fit in this
# many bytes (at least one), and at most _MAX_TRANSPOSE_BLOCKS blocks (a large crop's HLO stays small).
_TRANSPOSE_BLOCK_BYTES = 512 * 1024
_MAX_TRANSPOSE_BLOCKS = 64
# Fewer input channels (an RGB stem): XLA's own kernel gradient, measured no slower.
_MIN_BLOCKED_CHANNELS = 8


def _batch_minor(x: jax.Array) -> jax.Array:
    """``x`` (N, H, W, C) as (C, H, W, N), transposed a block of rows at a time.

    The kernel gradient of a convolution contracts the batch, so XLA:CPU's convolution wants the
    activation with the batch innermost. XLA writes that copy as one transpose of the whole array,
    which took 14.5 ms on the development VM for 8x96x128x64 float32 with the ReLU that produces it
    (25 MB: under 2 GB/s); the same transpose as a concatenation of per-row-block transposes of about
    512 KB, whose reads and writes stay in the core's cache, took 6.9 ms (jitted alone, ``dot,reduce``
    fusion option, docs/profile.md). No library op offers a faster transpose here.
    """
    n, h, w, c = x.shape
    rows = max(1, _TRANSPOSE_BLOCK_BYTES // max(1, n * w * c * x.dtype.itemsize), -(-h // _MAX_TRANSPOSE_BLOCKS))
    if rows >= h:
        return x.transpose(3, 1, 2, 0)
    return jnp.concatenate([x[:, i:i + rows].transpose(3, 1, 2, 0) for i in range(0, h, rows)], axis=1)


def _conv_kernel_gradient(x: jax.Array, g: jax.Array, kernel_shape: tuple[int, ...], stride: int, pad: int
                          ) -> jax.Array:
    """d(sum(conv(x, k, stride, pad) * g)) / dk: the correlation of the activation (batch as the
    contracted feature, channels as the batch) with the output gradient dilated by the stride, as
    XLA's autodiff writes it, on the activation from :func:`_batch_minor`; for a 1x1 kernel without
    padding, one matmul over the untransposed activation. Accumulated in float32 at least."""
    kh, kw = kernel_shape[:2]
    accumulate = jnp.promote_types(jnp.promote_types(x.dtype, g.dtype), jnp.float32)
    if (kh, kw, pad) == (1, 1, 0):
        # A 1x1 convolution's kernel gradient is one matmul, x^T g over every pixel of the batch: a
        # dot_general that contracts the leading axes reads x as it lies (the matmul packs its
        # operands itself), so no batch-innermost copy is written. See docs/profile.md (session 44).
        dk = jax.lax.dot_general(x[:, ::stride, ::stride], g, (((0, 1, 2), (0, 1, 2)), ((), ())),
                                 preferred_element_type=accumulate)
        return dk[None, None]
    _, h, w, _ = x.shape
    out_h, out_w = g.shape[1], g.shape[2]
    # Rows and columns past the last window (a stride that does not divide the padded size) are
    # read by no output: cut from the end, taken first from the padding, then from x.
    extra_h = h + 2 * pad - kh - stride * (out_h - 1)
    extra_w = w + 2 * pad - kw - stride * (out_w - 1)
    x = x[:, :h - max(0, extra_h - pad), :w - max(0, extra_w - pad)]
    dk = jax.lax.conv_general_dilated(
        _batch_minor(x), g, (1, 1), ((pad, max(0, pad - extra_h)), (pad, max(0, pad - extra_w))),
        rhs_dilation=(stride, stride), dimension_numbers=("NHWC", "IHWO", "NHWC"),
        preferred_element_type=accumulate)
    return dk.transpose(1, 2, 0, 3)  # (C, kh, kw, O) -> (kh, kw, C, O)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _blocked_kernel_gradient_conv(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
    return _blocked_kernel_gradient_conv_fwd(x, kernel, stride, pad)[0]


def _blocked_kernel_gradient_conv_fwd(x, kernel, stride, pad):
    return grouped_conv(x, kernel, stride, pad), (x, kernel)


def _blocked_kernel_gradient_conv_bwd(stride, pad, residuals, g):
    x, kernel = residuals
    (dx,) = jax.linear_transpose(lambda x: grouped_conv(x, kernel, stride, pad), x)(g)  # XLA's input gradient
    return dx, _conv_kernel_gradient(x, g, kernel.shape, stride, pad).astype(kernel.dtype)


_blocked_kernel_gradient_conv.defvjp(_blocked_kernel_gradient_conv_fwd, _blocked_kernel_gradient_conv_bwd)


def blocked_kernel_gradient_conv(x: jax.Array, kernel: jax.Array, stride: int, pad: int, groups: int = 1
                                 ) -> jax.Array:
    """:func:`grouped_conv` with the kernel gradient of :func:`_conv_kernel_gradient` for dense
    convolutions of at least ``_MIN_BLOCKED_CHANNELS`` input channels; XLA's op for the others."""
    if groups != 1 or x.shape[-1] < _MIN_BLOCKED_CHANNELS:
        return grouped_conv(x, kernel, stride, pad, groups)
    return _blocked_kernel_gradient_conv(x, kernel, stride, pad)


def bisection_kth_largest(values: jax.Array, k: jax.Array) -> jax.Array:
    """Non-negative floats order like their bit patterns read as int32, so 32 bisection steps over
    [0, +inf] in bit space, each one count of ``bits >= mid``, find the k-th largest exactly."""
    bits = jax.lax.bitcast_convert_type(values.astype(jnp.float32), jnp.int32)

    def bisect(_, bounds):
        low, high = bounds  # invariant: count(bits >= low) >= k > count(bits >= high)
        mid = low + (high - low) // 2
        enough = jnp.sum(bits >= mid) >= k
        return jnp.where(enough, mid, low), jnp.where(enough, high, mid)

    kth, _ = jax.lax.fori_loop(0, 32, bisect, (jnp.int32(0), jnp.int32(0x7F800001)))  # +inf + 1
    return jax.lax.bitcast_convert_type(kth, jnp.float32)


# ------------------------------------------------------------------------------------------------
# The bundles and the per-backend choice


XLA_KERNELS = Kernels("xla", xla_depthwise_conv, xla_max_pool_3x3_s2, sorted_kth_largest, repeat_upsample2_conv3x3,
                      grouped_conv, unpadded_shared)
CPU_KERNELS = Kernels("cpu", shifted_sum_depthwise_conv, scatter_max_pool_3x3_s2, bisection_kth_largest,
                      phase_upsample2_conv3x3, blocked_kernel_gradient_conv, barrier_padded_shared)
_BY_NAME = {"cpu": CPU_KERNELS, "xla": XLA_KERNELS}


def default_kernels(backend: str | None = None) -> Kernels:
    """The bundle for ``backend`` (default ``jax.default_backend()``): the CPU forms on "cpu",
    XLA's own ops on "gpu", "tpu" and any other backend."""
    backend = jax.default_backend() if backend is None else backend
    return CPU_KERNELS if backend == "cpu" else XLA_KERNELS


def get_kernels(choice: str | Kernels = "auto") -> Kernels:
    """``"auto"`` (:func:`default_kernels`), ``"cpu"``, ``"xla"`` or a :class:`Kernels` as is."""
    if isinstance(choice, Kernels):
        return choice
    if choice == "auto":
        return default_kernels()
    if choice not in _BY_NAME:
        raise ValueError(f"unknown kernels {choice!r}; expected 'auto', 'cpu' or 'xla' "
                         "(config field model.kernels)")
    return _BY_NAME[choice]
