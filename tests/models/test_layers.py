"""The one convolution module against ``nn.Conv``: parameters, initial values and outputs, with either kernels."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bisenet_jax.models.kernels import CPU_KERNELS, XLA_KERNELS
from bisenet_jax.models.layers import Convolution


@pytest.mark.parametrize("kernels", [CPU_KERNELS, XLA_KERNELS], ids=lambda k: k.name)
@pytest.mark.parametrize("groups, features, kernel_size", [(6, 6, 3), (6, 12, 3), (3, 6, 3), (1, 8, 3), (1, 5, 1)])
def test_convolution_is_nn_conv(groups, features, kernel_size, kernels):
    """Same parameter tree, same initial values and the same output as ``nn.Conv(feature_group_count=...)``
    with PyTorch's padding (k // 2 on every side), dense, grouped and depthwise (groups == 6)."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 10, 12, 6)), jnp.float32)
    ours = Convolution(features, kernel_size, 2, groups=groups, use_bias=True, kernels=kernels)
    p = kernel_size // 2
    reference = nn.Conv(features, (kernel_size, kernel_size), strides=(2, 2), padding=((p, p), (p, p)),
                        feature_group_count=groups, use_bias=True, kernel_init=ours.kernel_init)
    key = jax.random.PRNGKey(3)
    params, ref_params = ours.init(key, x), reference.init(key, x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref_params)
    np.testing.assert_array_equal(params["params"]["kernel"], ref_params["params"]["kernel"])
    params = jax.tree.map(lambda a: a + 0.1, params)  # a non-zero bias too
    # float32 sums of at most 9 * 6 products of ~N(0, 1) values: 1e-5
    np.testing.assert_allclose(ours.apply(params, x), reference.apply(params, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernels", [CPU_KERNELS, XLA_KERNELS], ids=lambda k: k.name)
@pytest.mark.parametrize("groups", [1, 6])
def test_convolution_padding_zero_reads_an_input_padded_beforehand(groups, kernels):
    """``padding=0`` on the zero-padded input (what ``kernels.pad_shared`` hands on) is the default
    padding on the input itself, dense and depthwise, at stride 2."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 9, 10, 6)), jnp.float32)
    default = Convolution(6, 3, 2, groups=groups, kernels=kernels)
    params = default.init(jax.random.PRNGKey(0), x)
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    got = Convolution(6, 3, 2, groups=groups, kernels=kernels, padding=0).apply(params, padded)
    np.testing.assert_allclose(got, default.apply(params, x), rtol=1e-5, atol=1e-5)


def test_convolution_refuses_a_padding_with_upsample_to():
    with pytest.raises(ValueError, match="padding=0 with upsample_to: the upsampled input is padded by the "
                                         "convolution, kernel_size // 2 = 1"):
        Convolution(4, 3, padding=0).init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 4)), upsample_to=(8, 8))


def test_convolution_checks_groups():
    with pytest.raises(ValueError, match="not both divisible by groups=4"):
        Convolution(8, groups=4).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 6)))


@pytest.mark.parametrize("kernels", [CPU_KERNELS, XLA_KERNELS], ids=lambda k: k.name)
@pytest.mark.parametrize("size, upsample_to, kernel_size", [((5, 6), (10, 12), 3), ((5, 6), (9, 12), 3),
                                                             ((4, 4), (12, 12), 3), ((5, 6), (10, 12), 1)])
def test_convolution_upsample_to_is_a_nearest_resize_first(size, upsample_to, kernel_size, kernels):
    """``upsample_to`` equals ``resize(x, size, "nearest")`` then the convolution, whether the
    kernel bundle's one-op form applies (x2 with a 3x3 kernel) or not (x3, 9 from 5, a 1x1 kernel);
    same parameters either way."""
    from bisenet_jax.models.layers import resize

    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, *size, 4)), jnp.float32)
    conv = Convolution(5, kernel_size, use_bias=True, kernels=kernels)
    params = jax.tree.map(lambda a: a + 0.1, conv.init(jax.random.PRNGKey(0), x))
    got = conv.apply(params, x, upsample_to)
    want = conv.apply(params, resize(x, upsample_to, "nearest"))
    assert got.shape == (2, *upsample_to, 5)
    assert jax.tree.map(jnp.shape, params) == {"params": {"kernel": (kernel_size, kernel_size, 4, 5), "bias": (5,)}}
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_upsampling_convolution_in_bfloat16_sums_the_phase_taps_in_float32():
    """A bfloat16 model keeps float32 weights: the CPU form sums the 3x3 taps into the phase kernel
    before rounding to bfloat16, so it is as close to the float32 result as the XLA form (one
    rounding of each tap), not further."""
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6, 8, 16)), jnp.float32)
    results = {}
    for kernels, dtype in ((XLA_KERNELS, jnp.float32), (CPU_KERNELS, jnp.bfloat16), (XLA_KERNELS, jnp.bfloat16)):
        conv = Convolution(8, 3, dtype=dtype, kernels=kernels)
        params = conv.init(jax.random.PRNGKey(0), x)
        assert params["params"]["kernel"].dtype == jnp.float32
        results[kernels.name, jnp.dtype(dtype).name] = np.asarray(conv.apply(params, x, (12, 16)), np.float32)
    reference = results["xla", "float32"]
    scale = np.abs(reference).max()
    cpu_error = np.abs(results["cpu", "bfloat16"] - reference).max() / scale
    xla_error = np.abs(results["xla", "bfloat16"] - reference).max() / scale
    assert results["cpu", "bfloat16"].shape == (2, 12, 16, 8)
    assert 0 < cpu_error < 2e-2 and cpu_error < 2 * xla_error + 1e-3, (cpu_error, xla_error)


def _flax_batch_norm(x, scale, bias, epsilon=1e-5):
    """Flax's own training BatchNorm (two-pass variance), differentiated by autodiff: the reference."""
    module = nn.BatchNorm(use_running_average=False, epsilon=epsilon, use_fast_variance=False, dtype=x.dtype,
                          param_dtype=scale.dtype)
    stats = {"mean": jnp.zeros_like(scale), "var": jnp.ones_like(scale)}
    y, updated = module.apply({"params": {"scale": scale, "bias": bias}, "batch_stats": stats}, x,
                              mutable=["batch_stats"])
    # flax's update with momentum 0.99 from (0, 1): recover the batch mean and (biased) variance.
    mean = updated["batch_stats"]["mean"] / (1 - module.momentum)
    var = (updated["batch_stats"]["var"] - module.momentum) / (1 - module.momentum)
    return y, mean, var


@pytest.mark.parametrize("shape, offset", [((4, 6, 5, 3), 0.0), ((8, 1, 1, 16), 0.0), ((2, 9, 7, 4), 100.0),
                                           ((8, 24, 32, 32), 0.5)])
@pytest.mark.parametrize("float64", [False, True], ids=["float32", "float64"])
def test_normalize_batch_is_flax_batch_norm_in_values_and_gradients(shape, offset, float64):
    """normalize_batch (hand-written gradient) against autodiff of flax's BatchNorm: y, the batch mean
    and variance, and the gradients of x, scale and bias of a loss that reads all three outputs (so
    the mean and variance terms of the gradient are checked too). (8, 1, 1, 16) is an attention BN
    (8 values per channel); offset 100 a mean far from zero next to std 1. Tolerances: float32
    2e-5 of each array's largest value (sums of <= 24,576 products); float64 1e-12."""
    from bisenet_jax.models.layers import normalize_batch

    with jax.enable_x64(float64):
        dtype = jnp.float64 if float64 else jnp.float32
        rng = np.random.default_rng(sum(shape))
        x = jnp.asarray(rng.normal(offset, 1.0, shape), dtype)
        scale = jnp.asarray(rng.uniform(0.5, 1.5, shape[-1]), dtype)
        bias = jnp.asarray(rng.normal(size=shape[-1]), dtype)
        weights = [jnp.asarray(rng.normal(size=s), dtype) for s in (shape, shape[-1:], shape[-1:])]

        def loss(fn):
            def value(x, scale, bias):
                outputs = fn(x, scale, bias)
                return sum(jnp.sum(o * w) for o, w in zip(outputs, weights)), outputs
            return jax.jit(jax.value_and_grad(value, argnums=(0, 1, 2), has_aux=True))

        (_, ours), our_grads = loss(lambda *a: normalize_batch(*a, 1e-5))(x, scale, bias)
        (_, theirs), their_grads = loss(_flax_batch_norm)(x, scale, bias)
        tolerance = 1e-12 if float64 else 2e-5
        for name, a, b in zip(["y", "mean", "var", "dx", "dscale", "dbias"], [*ours, *our_grads],
                              [*theirs, *their_grads]):
            assert a.dtype == dtype and a.shape == b.shape, name
            scale_of = float(np.max(np.abs(np.asarray(b))))
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=tolerance * scale_of, err_msg=name)


def test_batch_norm_keeps_pytorchs_running_statistics_and_flaxs_parameters():
    """The package's BatchNorm in training: flax's parameter and statistics tree, the output of
    flax's BatchNorm, and PyTorch's running statistics (momentum 0.1, Bessel-corrected variance);
    in inference flax's normalisation with the running statistics."""
    from bisenet_jax.models.layers import batch_norm

    x = jnp.asarray(np.random.default_rng(1).normal(0.3, 2.0, (8, 1, 1, 5)), jnp.float32)
    ours, reference = batch_norm(True), nn.BatchNorm(use_running_average=False, epsilon=1e-5, momentum=0.9)
    variables = ours.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, reference.init(jax.random.key(0), x))
    variables = {"params": {"scale": jnp.arange(1.0, 6.0), "bias": jnp.full((5,), 0.5)},
                 "batch_stats": {"mean": jnp.full((5,), 0.2), "var": jnp.full((5,), 1.5)}}
    y, updated = ours.apply(variables, x, mutable=["batch_stats"])
    expected_y, _ = reference.apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y, expected_y, rtol=1e-6, atol=1e-6)
    values = np.asarray(x, np.float64).reshape(8, 5)
    np.testing.assert_allclose(updated["batch_stats"]["mean"], 0.9 * 0.2 + 0.1 * values.mean(0), rtol=1e-6)
    np.testing.assert_allclose(updated["batch_stats"]["var"], 0.9 * 1.5 + 0.1 * values.var(0, ddof=1), rtol=1e-6)
    inference = batch_norm(False).apply({"params": variables["params"], "batch_stats": updated["batch_stats"]}, x)
    stats = updated["batch_stats"]
    expected = (values - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * np.arange(1.0, 6.0) + 0.5
    np.testing.assert_allclose(inference, expected.reshape(x.shape), rtol=1e-5, atol=1e-5)


def test_batch_norm_in_bfloat16_returns_bfloat16_from_float32_statistics():
    from bisenet_jax.models.layers import batch_norm, normalize_batch

    x = jnp.asarray(np.random.default_rng(2).normal(3.0, 0.5, (4, 6, 6, 8)), jnp.bfloat16)
    module = batch_norm(True, jnp.bfloat16)
    variables = module.init(jax.random.key(0), x)
    y, updated = module.apply(variables, x, mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16 and updated["batch_stats"]["var"].dtype == jnp.float32
    y32, _, _ = normalize_batch(x.astype(jnp.float32), jnp.ones(8), jnp.zeros(8), 1e-5)
    np.testing.assert_allclose(np.asarray(y, np.float32), y32, atol=0.02)  # bfloat16 keeps 8 bits
    weights = jnp.asarray(np.random.default_rng(3).normal(size=x.shape), jnp.float32)
    grad = jax.grad(lambda x: jnp.sum(module.apply(variables, x, mutable=["batch_stats"])[0].astype(jnp.float32)
                                      * weights))(x)
    grad32 = jax.grad(lambda x: jnp.sum(normalize_batch(x, jnp.ones(8), jnp.zeros(8), 1e-5)[0] * weights))(
        x.astype(jnp.float32))
    assert grad.dtype == jnp.bfloat16
    # the float32 gradient of the same (bfloat16-valued) input, to bfloat16's 8 bits of the largest value
    np.testing.assert_allclose(np.asarray(grad, np.float32), grad32, atol=0.02 * float(jnp.max(jnp.abs(grad32))))


def test_batch_norm_of_a_float64_model_keeps_its_statistics_float32_from_step_to_step():
    """A float64 model (the exactness tests' mode): the running statistics stay the float32 the
    initialisation made, so a train step's output state has its input's types (otherwise the
    second step compiles again); the update is PyTorch's, to float32's rounding."""
    from bisenet_jax.models.layers import batch_norm

    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(4).normal(1.0, 3.0, (4, 3, 3, 6)), jnp.float64)
        module = batch_norm(True, jnp.float64)
        variables = module.init(jax.random.key(0), x)
        assert {v.dtype for v in jax.tree.leaves(variables["batch_stats"])} == {jnp.dtype(jnp.float32)}
        y, updated = module.apply(variables, x, mutable=["batch_stats"])
        assert y.dtype == jnp.float64
        assert jax.tree.map(lambda v: v.dtype, updated) == jax.tree.map(lambda v: v.dtype, {
            "batch_stats": variables["batch_stats"]})
        values = np.asarray(x).reshape(-1, 6)
        np.testing.assert_allclose(updated["batch_stats"]["var"], 0.9 + 0.1 * values.var(0, ddof=1), rtol=2e-7)


def test_training_batch_norm_refuses_what_it_does_not_implement():
    from bisenet_jax.models.layers import BatchNorm

    x = jnp.ones((2, 3, 3, 4))
    with pytest.raises(ValueError, match="last axis with scale and bias"):
        BatchNorm(use_running_average=False, use_bias=False).init(jax.random.key(0), x)
