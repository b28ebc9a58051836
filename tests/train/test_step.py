"""The train step's dropout key: threefry4x32 masks from the state's raw threefry key, no rolled loop on CPU."""
from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bisenet_jax.benchmarks import train_speed
from bisenet_jax.train.setup import create_train_setup
from bisenet_jax.train import step as step_module


def _masks(rng, step, shape=(4, 64, 64, 32), rate=0.1):
    key = step_module.dropout_key(rng, jnp.asarray(step, jnp.int32))
    kept = nn.Dropout(rate, deterministic=False).apply({}, jnp.ones(shape), rngs={"dropout": key})
    return np.asarray(kept) != 0


def test_dropout_key_is_threefry4x32_from_the_raw_state_key():
    rng = jax.random.PRNGKey(3)  # what TrainState.rng holds (and checkpoints store): uint32[2], threefry
    key = step_module.dropout_key(rng, jnp.int32(5))
    assert jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0, impl="threefry4x32"))
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.split(jax.random.fold_in(rng, 5)).reshape(4))
    a, a_again, b, other_seed = (_masks(rng, 5), _masks(rng, 5), _masks(rng, 6), _masks(jax.random.PRNGKey(4), 5))
    np.testing.assert_array_equal(a, a_again)  # a resumed step draws the same masks
    # A fresh mask each step and each seed: two independent masks agree on 0.9^2 + 0.1^2 = 82% of the values.
    for other in (b, other_seed):
        assert abs(np.mean(a == other) - 0.82) < 0.003  # 5.7 standard errors
    # The keep rate 0.9 over 524288 draws: standard error 0.0004.
    assert abs(a.mean() - 0.9) < 0.002 and abs(b.mean() - 0.9) < 0.002


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="threefry2x32's rolled loop is its CPU lowering")
def test_v2_train_step_has_no_rolled_rng_loop(monkeypatch):
    """The reason for threefry4x32: threefry2x32 lowers on CPU to a five-trip loop whose carries are the
    mask's word arrays (copied on every trip); V2's step (a dropout in each of its five heads) must have none."""
    config = train_speed.benchmark_config("bisenetv2", 11, "float32", 2, 64, 64)
    batch = train_speed.random_batch(2, 64, 64, 11)

    def mask_loops():  # the while loops carrying a 4-D array of random words
        setup = create_train_setup(config, ignore_label=255)
        text = setup.train_step.lower(setup.state, batch).as_text()
        loops = [line for line in text.splitlines() if "stablehlo.while" in line]
        assert loops  # OHEM's selection has its own loops: the pattern below looks at the right lines
        return sorted(re.findall(r"tensor<(2x\d+x\d+x\d+)xui32>", " ".join(loops)))  # 2x: the batch

    assert mask_loops() == []
    # Control: the same step with JAX's default generator (the key the step used before threefry4x32).
    monkeypatch.setattr(step_module, "dropout_key", lambda rng, step: jax.random.wrap_key_data(
        jax.random.fold_in(rng, step)))
    assert mask_loops() == sorted(2 * ["2x8x8x1024", "2x16x16x128", "2x8x8x128", "2x4x4x128", "2x2x2x128"])
