"""Learning-rate schedule, weight-decay mask and the head learning-rate multiplier."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bisenet_jax.train.config import base_config
from bisenet_jax.train.optim import create_optimizer, decay_mask, warmup_poly_schedule


def test_schedule_warms_up_exponentially_then_decays_poly():
    schedule = warmup_poly_schedule(0.01, total_steps=1000, warmup_steps=100, warmup_start_factor=0.1, power=0.9)
    assert float(schedule(0)) == pytest.approx(0.001)
    assert float(schedule(50)) == pytest.approx(0.01 * 0.1 ** 0.5, rel=1e-5)
    assert float(schedule(100)) == pytest.approx(0.01)
    assert float(schedule(550)) == pytest.approx(0.01 * 0.5 ** 0.9, rel=1e-5)
    assert float(schedule(1000)) == pytest.approx(0.0, abs=1e-9)


def test_weight_decay_applies_to_conv_kernels_only():
    params = {"conv": {"kernel": jnp.ones((3, 3, 2, 4))}, "bn": {"scale": jnp.ones(4), "bias": jnp.ones(4)},
              "head": {"kernel": jnp.ones((1, 1, 4, 2)), "bias": jnp.ones(2)}}
    mask = decay_mask(params)
    assert mask == {"conv": {"kernel": True}, "bn": {"scale": False, "bias": False},
                    "head": {"kernel": True, "bias": False}}


def test_head_modules_get_the_lr_multiplier_and_no_decay_on_bn():
    config = base_config()
    config.optimizer.momentum = 0.0
    config.optimizer.weight_decay = 0.0
    config.optimizer.warmup_steps = 0
    config.optimizer.total_steps = 100
    config.optimizer.head_lr_multiplier = 10.0
    params = {"cp": {"k": {"kernel": jnp.ones((1, 1, 1, 1))}}, "ffm": {"k": {"kernel": jnp.ones((1, 1, 1, 1))}},
              "conv_out": {"b": {"bias": jnp.ones(1)}}}
    tx, schedule = create_optimizer(config)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    lr = float(schedule(0))
    np.testing.assert_allclose(updates["cp"]["k"]["kernel"], -lr, rtol=1e-6)
    np.testing.assert_allclose(updates["ffm"]["k"]["kernel"], -10 * lr, rtol=1e-6)
    np.testing.assert_allclose(updates["conv_out"]["b"]["bias"], -10 * lr, rtol=1e-6)


def test_sgd_weight_decay_matches_pytorch_order():
    """PyTorch SGD: buf = m * buf + (g + wd * p); p -= lr * buf."""
    config = base_config()
    config.optimizer.warmup_steps = 0
    config.optimizer.total_steps = 10
    config.optimizer.poly_power = 0.0  # constant rate
    config.optimizer.head_lr_multiplier = 1.0
    config.optimizer.weight_decay = 0.1
    params = {"w": {"kernel": jnp.full((1, 1, 1, 2), 2.0)}}
    tx, _ = create_optimizer(config)
    opt_state = tx.init(params)
    p, buf = np.full(2, 2.0), np.zeros(2)
    for g in (1.0, -0.5, 0.25):
        grads = {"w": {"kernel": jnp.full((1, 1, 1, 2), g)}}
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        buf = 0.9 * buf + (g + 0.1 * p)
        p = p - 0.01 * buf
    np.testing.assert_allclose(params["w"]["kernel"].reshape(-1), p, rtol=1e-6)
