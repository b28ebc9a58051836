"""The hand-written depthwise convolution against XLA's convolution, values and gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bisenet_jax.models.layers import Conv2d, conv2d, depthwise_conv, max_pool_3x3_s2, symmetric_padding


@pytest.mark.parametrize("height, width, channels, multiplier, stride",
                         [(9, 11, 3, 1, 1), (9, 11, 3, 1, 2), (8, 10, 2, 6, 2), (7, 7, 4, 2, 1), (6, 9, 3, 1, 2)])
def test_shifted_sum_matches_xla_conv(height, width, channels, multiplier, stride):
    rng = np.random.default_rng(height * width + multiplier)
    x = jnp.asarray(rng.normal(size=(2, height, width, channels)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 1, channels * multiplier)), jnp.float32)

    def run(shifted):
        return jax.vjp(lambda x, k: depthwise_conv(x, k, stride, use_shifted_sum=shifted), x, kernel)

    ours, ours_vjp = run(True)
    xla, xla_vjp = run(False)
    assert ours.shape == xla.shape == (2, (height - 1) // stride + 1, (width - 1) // stride + 1, channels * multiplier)
    np.testing.assert_allclose(ours, xla, rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(rng.normal(size=ours.shape), jnp.float32)
    for got, want in zip(ours_vjp(cotangent), xla_vjp(cotangent)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("groups, features", [(6, 6), (6, 12), (3, 6)])
def test_conv2d_is_nn_conv(groups, features):
    """Same parameter tree, same initial values and the same output as ``nn.Conv(feature_group_count=...)``."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 10, 12, 6)), jnp.float32)
    ours = conv2d(features, 3, 2, groups=groups, use_bias=True)
    assert isinstance(ours, Conv2d)
    reference = nn.Conv(features, (3, 3), strides=(2, 2), padding=symmetric_padding(3), feature_group_count=groups,
                        use_bias=True, kernel_init=ours.kernel_init)
    key = jax.random.PRNGKey(3)
    params, ref_params = ours.init(key, x), reference.init(key, x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref_params)
    np.testing.assert_array_equal(params["params"]["kernel"], ref_params["params"]["kernel"])
    params = jax.tree.map(lambda a: a + 0.1, params)  # a non-zero bias too
    np.testing.assert_allclose(ours.apply(params, x), reference.apply(params, x), rtol=1e-5, atol=1e-5)


def test_depthwise_kernel_shape_is_checked():
    with pytest.raises(ValueError, match="does not fit 4 input channels"):
        depthwise_conv(jnp.zeros((1, 5, 5, 4)), jnp.zeros((3, 3, 1, 6)))


@pytest.mark.parametrize("height, width", [(8, 10), (9, 7)])
def test_max_pool_matches_flax_and_routes_ties_to_the_first_maximum(height, width):
    rng = np.random.default_rng(height)
    x = jnp.asarray(rng.normal(size=(2, height, width, 3)), jnp.float32)
    reference = lambda x: nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    ours, ours_vjp = jax.vjp(max_pool_3x3_s2, x)
    want, want_vjp = jax.vjp(reference, x)
    np.testing.assert_array_equal(ours, want)
    cotangent = jnp.asarray(rng.normal(size=ours.shape), jnp.float32)
    np.testing.assert_allclose(ours_vjp(cotangent)[0], want_vjp(cotangent)[0], rtol=1e-6, atol=1e-6)
    # A constant input: every window is a tie; PyTorch sends each gradient to the window's first
    # (top-left) element, so pixel (0, 0) receives output (0, 0)'s gradient and nothing else.
    (grad,) = jax.vjp(max_pool_3x3_s2, jnp.ones((1, 4, 4, 1)))[1](jnp.arange(1.0, 5.0).reshape(1, 2, 2, 1))
    expected = np.zeros((4, 4))
    expected[0, 0], expected[0, 1], expected[1, 0], expected[1, 1] = 1.0, 2.0, 3.0, 4.0
    np.testing.assert_array_equal(grad[0, :, :, 0], expected)
