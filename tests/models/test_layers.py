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
