"""The kernel bundles: each CPU form against the XLA op it replaces (values and gradients), the
per-backend default, and which kernels a model traces."""
import copy
import dataclasses
import json
import os
import pathlib
import pickle
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax.extend import core as jax_core

from bisenet_jax.models import create_model
from bisenet_jax.models.kernels import (CPU_KERNELS, XLA_KERNELS, Kernels, crop_spatial, default_kernels, get_kernels,
                                       unpadded_shared)
from bisenet_jax.models.xception import XceptionStage

# ---------------------------------------------------------------------------------------------
# Depthwise convolution


# Every (multiplier, stride) the models use: X39 and the V2 shortcut / BGA have multiplier 1 at
# strides 1 and 2, the V2 Gather-and-Expand layers multiplier 6 at strides 1 and 2.
@pytest.mark.parametrize("height, width, channels, multiplier, stride",
                         [(9, 11, 3, 1, 1), (9, 11, 3, 1, 2), (8, 10, 2, 6, 1), (8, 10, 2, 6, 2), (7, 7, 4, 2, 1),
                          (6, 9, 3, 1, 2)])
def test_depthwise_forms_agree_in_values_and_gradients(height, width, channels, multiplier, stride):
    rng = np.random.default_rng(height * width + multiplier)
    x = jnp.asarray(rng.normal(size=(2, height, width, channels)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 1, channels * multiplier)), jnp.float32)

    def run(kernels):
        return jax.vjp(lambda x, k: kernels.depthwise_conv(x, k, stride, 1), x, kernel)

    cpu, cpu_vjp = run(CPU_KERNELS)
    xla, xla_vjp = run(XLA_KERNELS)
    assert cpu.shape == xla.shape == (2, (height - 1) // stride + 1, (width - 1) // stride + 1, channels * multiplier)
    # float32, values ~N(0, 1): sums of 9 products agree to 1e-5; the gradients (sums over the
    # batch and the image, in another order) to 1e-4.
    np.testing.assert_allclose(cpu, xla, rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(rng.normal(size=cpu.shape), jnp.float32)
    for got, want in zip(cpu_vjp(cotangent), xla_vjp(cotangent)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("multiplier", [1, 6])
def test_depthwise_input_gradient_adds_the_multipliers_channels_without_a_reduction(multiplier):
    """With a channel multiplier the input gradient adds the m channels of each input channel as m
    slices: the VJP's only sums are the kernel gradient's k*k width sums (no sum over the (C, m)
    array's minor axis, which went to YNNPACK and cost 2-10x more). Values:
    test_depthwise_forms_agree_in_values_and_gradients and the float64 whole-model test below."""
    x, kernel = jnp.zeros((2, 6, 6, 4)), jnp.zeros((3, 3, 1, 4 * multiplier))
    y, vjp = jax.vjp(lambda x, w: CPU_KERNELS.depthwise_conv(x, w, 2, 1), x, kernel)
    jaxpr = jax.make_jaxpr(vjp)(jnp.zeros_like(y)).jaxpr
    assert _count_primitive(jaxpr, "reduce_sum") == 9


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_kernel_gradient_accumulates_bfloat16_in_float32(stride):
    # Ones everywhere: the centre tap's gradient is the number of output pixels, 2 * 64 * 64 / stride^2
    # (exact in bfloat16). A sum kept in bfloat16 stops growing at 256 (256 + 1 rounds to 256).
    x = jnp.ones((2, 64, 64, 3), jnp.bfloat16)
    kernel = jnp.ones((3, 3, 1, 3), jnp.bfloat16)
    y, vjp = jax.vjp(lambda x, k: CPU_KERNELS.depthwise_conv(x, k, stride, 1), x, kernel)
    _, dkernel = vjp(jnp.ones_like(y))
    assert dkernel.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(dkernel[1, 1, 0], np.float32), 2 * 64 * 64 // stride ** 2)


@pytest.mark.parametrize("kernels", [CPU_KERNELS, XLA_KERNELS], ids=lambda k: k.name)
def test_depthwise_kernel_shape_is_checked(kernels):
    with pytest.raises(ValueError, match="does not fit 4 input channels"):
        kernels.depthwise_conv(jnp.zeros((1, 5, 5, 4)), jnp.zeros((3, 3, 1, 6)))


# ---------------------------------------------------------------------------------------------
# An activation padded once for a depthwise convolution and a residual add (pad_shared)


@pytest.mark.parametrize("stride", [1, 2])
def test_pad_shared_forms_give_the_convolution_and_the_add_the_same_values_and_gradients(stride):
    rng = np.random.default_rng(stride)
    x = jnp.asarray(rng.normal(size=(2, 9, 10, 4)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 1, 4)), jnp.float32)

    def block(kernels):
        def f(x, k):
            xs, pad = kernels.pad_shared(x, 1)
            return kernels.depthwise_conv(xs, k, stride, pad), crop_spatial(xs, 1 - pad)
        return f

    want, want_vjp = jax.vjp(lambda x, k: (XLA_KERNELS.depthwise_conv(x, k, stride, 1), x), x, kernel)
    xs, pad = CPU_KERNELS.pad_shared(x, 1)
    assert (xs.shape, pad) == ((2, 11, 12, 4), 0)  # the CPU form: padded once, the convolution pads nothing
    np.testing.assert_array_equal(crop_spatial(xs, 1), x)
    assert XLA_KERNELS.pad_shared(x, 1) == (x, 1)  # the library form hands x on as it is
    cotangents = tuple(jnp.asarray(rng.normal(size=w.shape), jnp.float32) for w in want)
    for kernels in (CPU_KERNELS, XLA_KERNELS):
        got, got_vjp = jax.vjp(block(kernels), x, kernel)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        # the input's gradient sums the convolution's and the add's: float32 sums of 9 terms, 1e-4
        for g, w in zip(got_vjp(cotangents), want_vjp(cotangents)):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def _blocks_per_fusion(hlo: str) -> list[int]:
    """For each fusion of the compiled module ``hlo``: how many residual blocks (the ``/<index>/`` in
    its ops' op_name, under the stage) its fused computation computes something of."""
    computations, current = {}, None
    for line in hlo.splitlines():
        header = re.match(r"^%?(\S+) .*\{$", line)
        if header and not line.startswith(" "):
            current = computations.setdefault(header.group(1), set())
        elif line.startswith("}"):
            current = None
        elif current is not None:
            current.update(re.findall(r'op_name="[^"]*?XceptionStage\)/(\d+)/', line))
    return [len(computations.get(fusion.group(1), ())) for fusion in
            re.finditer(r"= [^\n]* fusion\([^\n]*calls=%([\w.\-]+)", hlo)]


def test_cpu_xception_stage_gradient_reads_each_block_output_once_computed():
    """Without pad_shared XLA:CPU fused each block's output into the next block's depthwise shifted
    sums and its add, recomputing every earlier block of the stage in each fusion (all six here; eight
    in X39's layer2); with it no fusion of the compiled gradient computes parts of more than two blocks."""
    unshared = dataclasses.replace(CPU_KERNELS, name="cpu-unshared", pad_shared=unpadded_shared)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 16)), jnp.float32)
    widest = {}
    for kernels in (CPU_KERNELS, unshared):
        stage = XceptionStage(6, 4, kernels=kernels)
        variables = stage.init(jax.random.key(1), x)

        def loss(params, x):
            y, _ = stage.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                               mutable=["batch_stats"])
            return jnp.sum(y ** 2)

        hlo = jax.jit(jax.grad(loss)).lower(variables["params"], x).compile().as_text()
        widest[kernels.name] = max(_blocks_per_fusion(hlo))
    assert widest == {"cpu": 2, "cpu-unshared": 6}


# ---------------------------------------------------------------------------------------------
# 3x3 / 2 max pool


@pytest.mark.parametrize("height, width", [(8, 10), (9, 7), (10, 9), (7, 8), (2, 3)])
def test_max_pool_forms_agree_in_values_and_gradients(height, width):
    rng = np.random.default_rng(height)
    x = jnp.asarray(rng.normal(size=(2, height, width, 3)), jnp.float32)
    cpu, cpu_vjp = jax.vjp(CPU_KERNELS.max_pool_3x3_s2, x)
    xla, xla_vjp = jax.vjp(XLA_KERNELS.max_pool_3x3_s2, x)
    assert cpu.shape == (2, (height - 1) // 2 + 1, (width - 1) // 2 + 1, 3)
    np.testing.assert_array_equal(cpu, xla)  # a max selects, nothing is rounded
    cotangent = jnp.asarray(rng.normal(size=cpu.shape), jnp.float32)
    # Each input gathers at most four copies of the cotangent: float32 sums, agree to 1e-6.
    np.testing.assert_allclose(cpu_vjp(cotangent)[0], xla_vjp(cotangent)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernels", [CPU_KERNELS, XLA_KERNELS], ids=lambda k: k.name)
def test_max_pool_ties_send_the_gradient_to_the_first_maximum(kernels):
    """A constant input makes every window a tie. PyTorch sends each output's gradient to its
    window's first (top-left) element; the CPU form does so by construction, XLA's form through
    select-and-scatter with jax's ``>=`` selector, which keeps the first of equal values."""
    (grad,) = jax.vjp(kernels.max_pool_3x3_s2, jnp.ones((1, 5, 5, 1)))[1](jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1))
    # Output (i, j) reads rows 2i-1..2i+1 and columns 2j-1..2j+1 (row/column -1 is padding, never
    # the max): its first maximum is pixel (max(2i-1, 0), max(2j-1, 0)).
    expected = np.zeros((5, 5))
    for i in range(3):
        for j in range(3):
            expected[max(2 * i - 1, 0), max(2 * j - 1, 0)] += 3 * i + j + 1
    np.testing.assert_array_equal(grad[0, :, :, 0], expected)


@pytest.mark.parametrize("height, width", [(12, 10), (11, 13)])
def test_max_pool_gradients_with_many_ties_match_xla(height, width):
    """Values on a coarse grid tie inside most windows: the CPU form's first-maximum indices must pick
    the same element as select-and-scatter everywhere, at even and odd sizes."""
    rng = np.random.default_rng(width)
    x = jnp.asarray(rng.integers(0, 3, size=(2, height, width, 4)), jnp.float32)
    cpu, cpu_vjp = jax.vjp(CPU_KERNELS.max_pool_3x3_s2, x)
    xla, xla_vjp = jax.vjp(XLA_KERNELS.max_pool_3x3_s2, x)
    cotangent = jnp.asarray(rng.normal(size=cpu.shape), jnp.float32)
    np.testing.assert_allclose(cpu_vjp(cotangent)[0], xla_vjp(cotangent)[0], rtol=1e-6, atol=1e-6)


def test_max_pool_gradient_routes_every_window_from_the_input_alone():
    """The CPU form finds each window's first maximum from the input itself (an index recorded by
    the forward rule), never by comparing the taps with the pooled output: inside a jitted model XLA
    computed the pooled activation in two fusions whose last bits differed, and an early form lost
    the gradient of ~0.1% of the windows. The residuals are the indices alone, and every window routes
    its whole cotangent: the input gradient sums to the cotangent's sum and equals XLA's."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 9, 10, 3)), jnp.float32)
    cotangent = jnp.asarray(rng.uniform(1.0, 2.0, size=(2, 5, 5, 3)), jnp.float32)
    from bisenet_jax.models.kernels import _scatter_max_pool_bwd, _scatter_max_pool_fwd

    pooled, index = _scatter_max_pool_fwd(x, (9, 10))
    assert index.dtype == jnp.int32 and index.shape == pooled.shape
    (grad,) = _scatter_max_pool_bwd((9, 10), index, cotangent)
    np.testing.assert_allclose(float(grad.sum()), float(cotangent.sum()), rtol=1e-6)
    (want,) = jax.vjp(XLA_KERNELS.max_pool_3x3_s2, x)[1](cotangent)
    np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-6)


def test_max_pool_beyond_int32_indices_takes_xla_s_op(monkeypatch):
    """The scatter's indices are int32 positions within one image: an image with more elements than
    they reach takes XLA's op (no custom gradient traced), with the same values and gradients."""
    from bisenet_jax.models import kernels

    x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 7, 6, 3)), jnp.float32)
    grad = jax.grad(lambda v: CPU_KERNELS.max_pool_3x3_s2(v).sum())
    assert "custom_vjp_call" in str(jax.make_jaxpr(CPU_KERNELS.max_pool_3x3_s2)(x))
    assert "select_and_scatter_add" not in str(jax.make_jaxpr(grad)(x))
    monkeypatch.setattr(kernels, "_MAX_SCATTER_INDEX", 7 * 6 * 3 - 1)
    x = x[:1]  # another shape: jax.make_jaxpr caches its traces by function and shapes
    assert "custom_vjp_call" not in str(jax.make_jaxpr(CPU_KERNELS.max_pool_3x3_s2)(x))
    assert "select_and_scatter_add" in str(jax.make_jaxpr(grad)(x))
    np.testing.assert_array_equal(grad(x), jax.grad(lambda v: XLA_KERNELS.max_pool_3x3_s2(v).sum())(x))


def test_max_pool_gradient_of_a_window_of_minus_infinity_follows_xla():
    """A window whose every value is -inf ties everywhere, so its first maximum is tap 0 (above-left):
    padding for the windows of the first row and column (the index is out of range and the scatter
    drops it, as XLA's select-and-scatter drops what lands on padding), an input element for the
    others; every other window's gradient is kept."""
    x = jnp.full((1, 4, 4, 2), -jnp.inf).at[0, 2:, 2:, 1].set(1.0)
    pooled, vjp = jax.vjp(CPU_KERNELS.max_pool_3x3_s2, x)
    cotangent = jnp.arange(1.0, 1.0 + pooled.size).reshape(pooled.shape)
    (grad,) = vjp(cotangent)
    (want,) = jax.vjp(XLA_KERNELS.max_pool_3x3_s2, x)[1](cotangent)
    np.testing.assert_array_equal(grad, want)
    # Channel 0 is all -inf: of its 2x2 windows only (1, 1) has tap 0 inside the input, at (1, 1).
    expected = np.zeros((4, 4), np.float32)
    expected[1, 1] = cotangent[0, 1, 1, 0]
    np.testing.assert_array_equal(grad[0, :, :, 0], expected)
    # Channel 1: windows (0, 0), (0, 1) and (1, 0) read only -inf (and padding), so tap 0 is padding
    # and their gradient is dropped; window (1, 1) holds the 1.0s and sends its gradient to (2, 2).
    expected = np.zeros((4, 4), np.float32)
    expected[2, 2] = cotangent[0, 1, 1, 1]
    np.testing.assert_array_equal(grad[0, :, :, 1], expected)


@pytest.mark.slow  # two float64 compiles of a whole model per case: 0.5-1 minute on 2 cores
@pytest.mark.parametrize("name", ["bisenetv1_r18", "bisenetv2"])
def test_cpu_and_xla_bundles_give_one_model_the_same_training_gradients(name):
    """Whole-model check in float64, jitted (where XLA fuses the CPU forms with their neighbours):
    the training loss's gradient for every parameter agrees between the bundles to 1e-10 of the
    largest gradient entry (float64 rounding of sums taken in another order: 1.05e-12 for V2's stem
    convolution kernel on the AVX-512 AMD EPYC of session 29, under 1e-12 on the earlier VMs).
    R18: the stem's max pool, the context path's upsampling convolutions and the dense convolutions'
    kernel gradients; V2: the stem's max pool, depthwise convolutions, the four auxiliary heads'
    upsampling convolutions and the dense convolutions.
    (The max pool's old backward failed this with an error of 0.4 on the R18 stem.)"""
    script = pathlib.Path(__file__).with_name("bundle_gradients.py")
    out = subprocess.run([sys.executable, str(script), name, "64", "96"], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["num_params"] > 100
    assert result["loss"][0] == pytest.approx(result["loss"][1], rel=1e-9)
    assert result["worst_error"] < 1e-10, result


# ---------------------------------------------------------------------------------------------
# Nearest x2 upsampling followed by a 3x3 convolution


@pytest.mark.parametrize("height, width, channels, features", [(6, 8, 5, 7), (5, 7, 3, 4), (1, 1, 2, 3), (3, 10, 16, 1)])
def test_upsample_conv_forms_agree_in_values_and_gradients(height, width, channels, features):
    rng = np.random.default_rng(height * width + features)
    x = jnp.asarray(rng.normal(size=(2, height, width, channels)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, channels, features)), jnp.float32)
    cpu, cpu_vjp = jax.vjp(CPU_KERNELS.upsample2_conv3x3, x, kernel)
    xla, xla_vjp = jax.vjp(XLA_KERNELS.upsample2_conv3x3, x, kernel)
    # The definition, written out: every pixel repeated 2x2, then XLA's convolution with padding 1.
    upsampled = np.repeat(np.repeat(np.asarray(x), 2, axis=1), 2, axis=2)
    want = jax.lax.conv_general_dilated(upsampled, kernel, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert cpu.shape == xla.shape == (2, 2 * height, 2 * width, features)
    # float32, values ~N(0, 1): the CPU form sums the kernel taps first (up to 4 per phase tap),
    # then 4 * channels products; agreement to 1e-4 relative to the outputs' scale (~sqrt(9 * C)).
    np.testing.assert_allclose(xla, want, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(cpu, want, rtol=1e-4, atol=1e-4)
    cotangent = jnp.asarray(rng.normal(size=cpu.shape), jnp.float32)
    for got, expected in zip(cpu_vjp(cotangent), xla_vjp(cotangent)):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_phase_kernel_sums_are_the_tap_matrix_contraction():
    """The phase kernel as static sums of kernel taps equals its definition, the contraction with the
    0/1 tap matrices, for every (p, q, a, b) (small integers: the float32 sums are exact)."""
    from bisenet_jax.models.kernels import _PHASE_TAPS, _phase_kernel
    kernel = np.random.default_rng(3).integers(-8, 9, size=(3, 3, 4, 5)).astype(np.float32)
    taps = np.asarray(_PHASE_TAPS, np.float64)
    want = np.einsum("apy,bqx,yxio->pqiabo", taps, taps, kernel.astype(np.float64))
    got = np.asarray(_phase_kernel(jnp.asarray(kernel)))
    assert got.shape == (2, 2, 4, 2, 2, 5)
    np.testing.assert_array_equal(got, want)
    # Each phase sums 1, 2 or 4 taps: 16 phase-tap pairs, 36 taps in all (each 3x3 tap used 4 times).
    ones = np.asarray(_phase_kernel(jnp.ones((3, 3, 1, 1))))
    assert sorted(ones.ravel().tolist()) == [1.0] * 4 + [2.0] * 8 + [4.0] * 4


def test_upsample_conv_gradients_under_jit_and_in_float64():
    """The hand-written kernel gradient (one matmul per 2x2 tap) against autodiff of the XLA form,
    jitted, in float64 (no float32 rounding: agreement to 1e-12)."""
    script = """
import jax, json, numpy as np
jax.config.update("jax_enable_x64", True)
from bisenet_jax.models.kernels import CPU_KERNELS, XLA_KERNELS
rng = np.random.default_rng(0)
x, k = rng.normal(size=(3, 7, 6, 4)), rng.normal(size=(3, 3, 4, 5))
g = rng.normal(size=(3, 14, 12, 5))
loss = lambda f: jax.jit(jax.grad(lambda x, k: (f(x, k) * g).sum(), (0, 1)))(x, k)
(cx, ck), (xx, xk) = loss(CPU_KERNELS.upsample2_conv3x3), loss(XLA_KERNELS.upsample2_conv3x3)
print(json.dumps([str(ck.dtype), float(abs(cx - xx).max()), float(abs(ck - xk).max()), float(abs(xk).max())]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    dtype, dx_error, dk_error, dk_scale = json.loads(out.stdout.strip().splitlines()[-1])
    assert dtype == "float64" and dk_scale > 1.0
    assert dx_error < 1e-12 and dk_error < 1e-12


@pytest.mark.parametrize("kernels", [CPU_KERNELS, XLA_KERNELS], ids=lambda k: k.name)
def test_upsample_conv_kernel_shape_is_checked(kernels):
    with pytest.raises(ValueError, match=r"kernel \(1, 1, 4, 6\) does not fit 4 input channels"):
        kernels.upsample2_conv3x3(jnp.zeros((1, 5, 5, 4)), jnp.zeros((1, 1, 4, 6)))


# ---------------------------------------------------------------------------------------------
# Dense convolution (the kernel gradient's operand transposed in row blocks)

# Every (kernel, stride) the models use (7x7/2 stems, 3x3/1 and /2, 1x1/1 and /2), at even and odd
# sizes and strides that leave rows past the last window, plus padding 0 and a stride of 3.
DENSE_CASES = [(9, 11, 8, 4, 3, 1, 1), (8, 10, 9, 5, 3, 2, 1), (9, 11, 8, 4, 7, 2, 3), (6, 6, 8, 2, 1, 1, 0),
               (7, 7, 8, 3, 3, 2, 1), (5, 8, 16, 3, 1, 2, 0), (6, 5, 8, 3, 5, 3, 2), (7, 9, 8, 6, 3, 2, 0),
               (9, 10, 8, 4, 3, 3, 1), (10, 12, 8, 4, 7, 2, 3)]  # rows past the last window beyond the padding


@pytest.mark.parametrize("height, width, channels, features, k, stride, pad", DENSE_CASES)
def test_dense_conv_forms_agree_in_values_and_gradients(height, width, channels, features, k, stride, pad):
    """float32, op by op: the values and input gradient are XLA's own ops (equal); the kernel
    gradient sums the same products in another order (tolerance 1e-5 of the largest entry)."""
    rng = np.random.default_rng(height * width + k + stride)
    x = jnp.asarray(rng.normal(size=(3, height, width, channels)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(k, k, channels, features)), jnp.float32)
    cpu, cpu_vjp = jax.vjp(lambda x, w: CPU_KERNELS.conv(x, w, stride, pad), x, kernel)
    xla, xla_vjp = jax.vjp(lambda x, w: XLA_KERNELS.conv(x, w, stride, pad), x, kernel)
    assert cpu.shape == xla.shape == (3, (height + 2 * pad - k) // stride + 1, (width + 2 * pad - k) // stride + 1,
                                      features)
    np.testing.assert_array_equal(cpu, xla)
    g = jnp.asarray(rng.normal(size=cpu.shape), jnp.float32)
    (cpu_dx, cpu_dk), (xla_dx, xla_dk) = cpu_vjp(g), xla_vjp(g)
    np.testing.assert_array_equal(cpu_dx, xla_dx)
    assert cpu_dk.dtype == jnp.float32
    np.testing.assert_allclose(cpu_dk, xla_dk, rtol=0, atol=1e-5 * float(jnp.abs(xla_dk).max()))


def test_dense_conv_traces_its_custom_gradient_only_where_it_applies():
    """A custom VJP for dense convolutions of >= 8 input channels; XLA's op (and autodiff) for an
    RGB stem, grouped and depthwise convolutions."""
    def custom_vjps(x_shape, k_shape, groups=1):
        x, w = jnp.zeros(x_shape), jnp.zeros(k_shape)
        jaxpr = jax.make_jaxpr(lambda x, w: CPU_KERNELS.conv(x, w, 1, 1, groups))(x, w).jaxpr
        return _count_primitive(jaxpr, "custom_vjp_call")

    assert custom_vjps((1, 6, 6, 8), (3, 3, 8, 4)) == 1
    assert custom_vjps((1, 6, 6, 3), (3, 3, 3, 4)) == 0  # RGB
    assert custom_vjps((1, 6, 6, 16), (3, 3, 8, 4), groups=2) == 0
    assert custom_vjps((1, 6, 6, 16), (3, 3, 1, 16), groups=16) == 0


@pytest.mark.parametrize("k, stride, pad, transposes, dots", [(1, 1, 0, 0, 1), (1, 2, 0, 0, 1), (3, 1, 1, 2, 0)])
def test_a_1x1_kernel_gradient_is_one_matmul_without_a_transposed_copy(k, stride, pad, transposes, dots):
    """A 1x1 convolution's kernel gradient contracts the activation as it lies (one dot_general, no
    transpose of the activation); a 3x3 one still transposes it (one block here) for XLA's
    convolution, and its (C, kh, kw, O) result to HWIO. Values: test_dense_conv_forms_agree_in_values_and_gradients
    and test_dense_conv_gradients_under_jit_in_float64_and_in_row_blocks."""
    x, w = jnp.zeros((2, 6, 6, 8)), jnp.zeros((k, k, 8, 4))
    y, vjp = jax.vjp(lambda w: CPU_KERNELS.conv(x, w, stride, pad), w)
    jaxpr = jax.make_jaxpr(vjp)(jnp.zeros_like(y)).jaxpr
    assert _count_primitive(jaxpr, "transpose") == transposes
    assert _count_primitive(jaxpr, "dot_general") == dots


@pytest.mark.parametrize("block_bytes, expected_blocks",
                         [(1, 7), (4 * 5 * 6 * 4, 7), (2 * 4 * 5 * 6 * 4 - 1, 7), (2 * 4 * 5 * 6 * 4, 4),
                          (3 * 4 * 5 * 6 * 4, 3), (10 ** 9, 1)])
def test_batch_minor_is_a_transpose_for_every_block_size(monkeypatch, block_bytes, expected_blocks):
    """One row per block (and rounding down), two, three (7 rows: a short last block), one block."""
    from bisenet_jax.models import kernels

    monkeypatch.setattr(kernels, "_TRANSPOSE_BLOCK_BYTES", block_bytes)
    x = jnp.arange(4 * 7 * 5 * 6, dtype=jnp.float32).reshape(4, 7, 5, 6)
    # A new lambda each time: make_jaxpr caches its trace per function, and the block size is a module global.
    assert _count_primitive(jax.make_jaxpr(lambda x: kernels._batch_minor(x))(x).jaxpr, "transpose") == expected_blocks
    np.testing.assert_array_equal(kernels._batch_minor(x), x.transpose(3, 1, 2, 0))


@pytest.mark.parametrize("max_blocks, expected_blocks", [(64, 7), (3, 3), (1, 1)])
def test_batch_minor_caps_the_number_of_blocks(monkeypatch, max_blocks, expected_blocks):
    """One-row blocks (block_bytes=1) of 7 rows, capped at ``_MAX_TRANSPOSE_BLOCKS`` blocks: 7, 3 (3 + 3 + 1
    rows) or one whole transpose; the same transpose each time."""
    from bisenet_jax.models import kernels

    monkeypatch.setattr(kernels, "_TRANSPOSE_BLOCK_BYTES", 1)
    monkeypatch.setattr(kernels, "_MAX_TRANSPOSE_BLOCKS", max_blocks)
    x = jnp.arange(2 * 7 * 3 * 8, dtype=jnp.float32).reshape(2, 7, 3, 8)
    # A new lambda each time: make_jaxpr caches its trace per function, and the block size is a module global.
    assert _count_primitive(jax.make_jaxpr(lambda x: kernels._batch_minor(x))(x).jaxpr, "transpose") == expected_blocks
    np.testing.assert_array_equal(kernels._batch_minor(x), x.transpose(3, 1, 2, 0))


def test_dense_conv_gradients_under_jit_in_float64_and_in_row_blocks():
    """Jitted, float64 (no float32 rounding: agreement to 1e-12 of the largest entry), with blocks of
    one and two rows so that the blocked transpose itself is exercised; and bfloat16 inputs, whose
    kernel gradient, accumulated in float32 and rounded once to bfloat16, is within 2**-8 of the
    largest entry of the float64 gradient of the same (rounded) inputs."""
    script = """
import jax, json, numpy as np
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from bisenet_jax.models import kernels
from bisenet_jax.models.kernels import CPU_KERNELS, XLA_KERNELS
rng = np.random.default_rng(0)
errors = []
for n, h, w, c, o, k, s, block_bytes in [(3, 9, 7, 8, 5, 3, 1, 1), (2, 10, 9, 12, 4, 3, 2, 2 * 9 * 12 * 8 * 2),
                                         (2, 13, 11, 8, 3, 7, 2, 1), (4, 8, 6, 16, 6, 1, 2, 10 ** 9)]:
    kernels._TRANSPOSE_BLOCK_BYTES = block_bytes
    x, kern = rng.normal(size=(n, h, w, c)), rng.normal(size=(k, k, c, o))
    g = rng.normal(size=(n, (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1, o))
    grads_of = lambda f, x, kern, g: jax.jit(jax.grad(lambda x, kern: (f(x, kern, s, k // 2) * g).sum(),
                                                      (0, 1)))(x, kern)
    (cx, ck), (xx, xk) = grads_of(CPU_KERNELS.conv, x, kern, g), grads_of(XLA_KERNELS.conv, x, kern, g)
    scale = float(abs(xk).max())
    errors.append([str(ck.dtype), float(abs(cx - xx).max()) / float(abs(xx).max()), float(abs(ck - xk).max()) / scale])
    xb, gb = (jnp.asarray(a, jnp.bfloat16) for a in (x, g))
    bf = jax.jit(jax.vjp(lambda kern: CPU_KERNELS.conv(xb, kern, s, k // 2), jnp.asarray(kern, jnp.bfloat16))[1])
    (bk,) = bf(gb)
    (_, want) = grads_of(XLA_KERNELS.conv, xb.astype(jnp.float64), kern, gb.astype(jnp.float64))
    errors.append([str(bk.dtype), 0.0, float(abs(bk.astype(jnp.float64) - want).max()) / float(abs(want).max())])
print(json.dumps(errors))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    errors = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(errors) == 8
    for (dtype, dx_error, dk_error), (bf_dtype, _, bf_error) in zip(errors[::2], errors[1::2]):
        assert dtype == "float64" and dx_error < 1e-12 and dk_error < 1e-12
        assert bf_dtype == "bfloat16" and bf_error < 2 ** -8


# ---------------------------------------------------------------------------------------------
# OHEM's k-th largest loss


@pytest.mark.parametrize("k", [1, 7, 300, 500, 699, 700, 1000])
def test_kth_largest_forms_agree_with_a_sort_with_ties_and_zeros(k):
    rng = np.random.default_rng(k)
    values = rng.exponential(size=1000).astype(np.float32)
    values[:300] = 0.0  # ignored pixels
    values[300:340] = values[500]  # a block of ties around the middle
    want = np.sort(values)[::-1][k - 1]
    for kernels in (CPU_KERNELS, XLA_KERNELS):  # both exact: no tolerance
        assert float(jax.jit(kernels.kth_largest)(jnp.asarray(values), jnp.int32(k))) == want, kernels.name


def test_kth_largest_of_zero_is_infinite_in_both_forms():
    """k = 0 (OHEM with fewer than 16 valid pixels) selects nothing: +inf is above every value."""
    values = jnp.asarray([0.0, 1.0, 2.0])
    for kernels in (CPU_KERNELS, XLA_KERNELS):
        assert float(kernels.kth_largest(values, jnp.int32(0))) == np.inf, kernels.name


# ---------------------------------------------------------------------------------------------
# The choice: per backend, by name, and what a model traces


@pytest.mark.parametrize("backend, name", [("cpu", "cpu"), ("gpu", "xla"), ("tpu", "xla"), ("cuda", "xla"),
                                           ("rocm", "xla"), ("METAL", "xla")])
def test_default_kernels_per_backend(backend, name):
    assert default_kernels(backend).name == name


def test_default_kernels_follow_this_process_backend():
    assert default_kernels() is default_kernels(jax.default_backend())
    assert get_kernels("auto") is default_kernels()


def test_kernels_by_name_and_unknown_names():
    assert get_kernels("cpu") is CPU_KERNELS and get_kernels("xla") is XLA_KERNELS
    assert get_kernels(CPU_KERNELS) is CPU_KERNELS
    assert repr(CPU_KERNELS) == "Kernels(name='cpu')"
    with pytest.raises(ValueError, match="unknown kernels 'gpu'; expected 'auto', 'cpu' or 'xla'"):
        get_kernels("gpu")


def test_every_bundle_has_every_op():
    ops = {"depthwise_conv", "max_pool_3x3_s2", "kth_largest", "upsample2_conv3x3", "conv", "pad_shared"}
    for kernels in (CPU_KERNELS, XLA_KERNELS):
        assert isinstance(kernels, Kernels)
        assert all(callable(getattr(kernels, op)) for op in ops)


def test_create_model_resolves_auto_once_at_construction():
    assert create_model("bisenetv2", 19).kernels is default_kernels()
    assert create_model("bisenetv2", 19, kernels="xla").kernels is XLA_KERNELS
    assert create_model("bisenetv1_x39", 19, kernels=CPU_KERNELS).kernels is CPU_KERNELS
    with pytest.raises(ValueError, match="unknown kernels"):
        create_model("bisenetv2", 19, kernels="gpu")


@pytest.mark.parametrize("kernels", ["cpu", "xla"])
def test_a_model_with_either_bundle_copies_and_pickles(kernels):
    model = create_model("bisenetv1_x39", 19, kernels=kernels)
    assert copy.deepcopy(model) == model and copy.deepcopy(model).kernels is model.kernels
    assert pickle.loads(pickle.dumps(model)).kernels is get_kernels(kernels)


def _count_primitive(jaxpr, name: str) -> int:
    """Equations named ``name`` in ``jaxpr`` and every jaxpr nested in it (jit, cond, scans...)."""
    return sum((eqn.primitive.name == name) + sum(_count_primitive(sub, name)
                                                  for sub in jax_core.jaxprs_in_params(eqn.params))
               for eqn in jaxpr.eqns)


def _forward_and_grad_jaxpr(model):
    x = jnp.zeros((1, 64, 64, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))

    def forward_and_grad(variables, x):
        def loss(params):
            (logits, aux), _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"],
                                           rngs={"dropout": jax.random.key(0)})
            return logits.sum() + sum(a.sum() for a in aux)

        return model.apply(variables, x, train=False), jax.grad(loss)(variables["params"])

    return jax.make_jaxpr(forward_and_grad)(variables, x).jaxpr, variables


def _eval_forward_jaxpr(model, variables):
    return jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, jnp.zeros((1, 64, 64, 3))).jaxpr


def _train_forward_jaxpr(model, variables):
    def forward(v, x):
        return model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})[0]

    return jax.make_jaxpr(forward)(variables, jnp.zeros((1, 64, 64, 3))).jaxpr


def _count_dense_custom_vjps(jaxpr) -> int:
    """custom_vjp equations whose function is one dense convolution (``kernels.conv``'s CPU form)."""
    return sum((eqn.primitive.name == "custom_vjp_call"
                and [e.primitive.name for e in eqn.params["call_jaxpr"].jaxpr.eqns] == ["conv_general_dilated"]
                and eqn.params["call_jaxpr"].jaxpr.eqns[0].params["feature_group_count"] == 1
                and tuple(eqn.params["call_jaxpr"].jaxpr.eqns[0].invars[1].aval.shape[:2]) != (2, 2))
               + sum(_count_dense_custom_vjps(sub) for sub in jax_core.jaxprs_in_params(eqn.params)
                     if eqn.primitive.name != "custom_vjp_call")
               for eqn in jaxpr.eqns)


def _count_dense_convolutions(jaxpr) -> int:
    """Convolutions with one feature group and >= 8 input channels in ``jaxpr`` and every jaxpr nested in it
    (custom VJPs' functions included): those ``kernels.conv``'s CPU form takes, plus 2x2 phase convolutions."""
    return sum((eqn.primitive.name == "conv_general_dilated" and eqn.params["feature_group_count"] == 1
                and eqn.invars[0].aval.shape[-1] >= 8)
               + sum(_count_dense_convolutions(sub) for sub in jax_core.jaxprs_in_params(eqn.params))
               for eqn in jaxpr.eqns)


def _count_2x2_convolutions(jaxpr) -> int:
    """Convolutions with a 2x2 kernel (the phase form of an upsampling convolution and its input
    gradient) in ``jaxpr`` and every jaxpr nested in it."""
    return sum((eqn.primitive.name == "conv_general_dilated" and tuple(eqn.invars[1].aval.shape[:2]) == (2, 2))
               + sum(_count_2x2_convolutions(sub) for sub in jax_core.jaxprs_in_params(eqn.params))
               for eqn in jaxpr.eqns)


# A max pool in every model (ResNet and Xception stems, the V2 stem block); depthwise convolutions
# in X39 (51) and V2 (16); upsampling convolutions in V1's context path (2, in the eval forward
# and in training) and V2's auxiliary heads (4, training only).
@pytest.mark.parametrize("name,eval_upsampling,train_upsampling", [("bisenetv1_r18", 2, 2), ("bisenetv1_x39", 2, 2),
                                                                   ("bisenetv2", 0, 4)])
def test_xla_kernels_trace_no_custom_vjp_and_cpu_kernels_one_per_op(name, eval_upsampling, train_upsampling):
    xla_jaxpr, variables = _forward_and_grad_jaxpr(create_model(name, 19, kernels="xla"))
    assert _count_primitive(xla_jaxpr, "custom_vjp_call") == 0
    assert _count_primitive(xla_jaxpr, "select_and_scatter_add") == 1  # XLA's max pool gradient
    assert _count_2x2_convolutions(xla_jaxpr) == 0

    cpu_jaxpr, _ = _forward_and_grad_jaxpr(create_model(name, 19, kernels="cpu"))
    depthwise = [path for path, leaf in traverse_util.flatten_dict(variables["params"]).items()
                 if path[-1] == "kernel" and leaf.shape[2] == 1]  # (k, k, 1, C * m): one input channel per group
    # The eval forward traces each CPU kernel once as a custom_vjp (under grad the forward and
    # backward are inlined): every depthwise convolution, the max pool, the upsampling convolutions
    # and the dense convolutions of >= 8 input channels of the eval forward got the CPU forms.
    dense = _count_dense_convolutions(_eval_forward_jaxpr(create_model(name, 19, kernels="xla"), variables))
    assert dense > 10
    # The training forward (no grad, so each custom VJP is one equation): every dense convolution of
    # >= 8 input channels, the auxiliary heads' included, is the CPU form.
    train_dense = _count_dense_convolutions(_train_forward_jaxpr(create_model(name, 19, kernels="xla"), variables))
    assert train_dense > dense
    cpu_train = _train_forward_jaxpr(create_model(name, 19, kernels="cpu"), variables)
    assert _count_dense_custom_vjps(cpu_train) == train_dense - train_upsampling
    # and no other dense convolution of >= 8 channels is left but the upsampling's 2x2 phase ones.
    assert _count_dense_convolutions(cpu_train) == _count_dense_custom_vjps(cpu_train) + train_upsampling
    assert _count_primitive(cpu_jaxpr, "custom_vjp_call") == len(depthwise) + 1 + eval_upsampling + (
        dense - eval_upsampling)  # the XLA bundle's upsampling convolutions are dense 3x3 ones
    assert _count_primitive(cpu_jaxpr, "select_and_scatter_add") == 0
    # Every upsampling convolution, in the eval forward and in training, is a 2x2 phase convolution;
    # training adds its input gradient (a 2x2 convolution too).
    assert _count_2x2_convolutions(cpu_jaxpr) == eval_upsampling + 2 * train_upsampling
