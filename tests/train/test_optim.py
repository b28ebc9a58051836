"""Learning-rate schedule (on the step and the time clock), weight-decay mask and the head learning-rate multiplier."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bisenet_jax.train.config import base_config
from bisenet_jax.train.optim import (BudgetClock, create_optimizer, decay_mask, scale_updates, schedule_clock,
                                    warmup_poly_schedule)


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


def _clock_config(clock: str, name: str = "sgd"):
    config = base_config()
    config.optimizer.name = name
    config.optimizer.warmup_steps = 2
    config.optimizer.total_steps = 8
    config.optimizer.weight_decay = 0.1
    config.optimizer.head_lr_multiplier = 10.0
    config.optimizer.schedule_clock = clock
    config.train.time_budget_minutes = 1.0
    return config


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_time_clock_updates_equal_the_step_clock_at_the_same_position(name):
    """The time clock runs the optimiser at unit rate and scales its updates by schedule(position):
    at position = step it must reproduce the step clock (warmup, decay, head multiplier, decay order)."""
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {"cp": {"k": {"kernel": jax.random.normal(keys[0], (3, 3, 2, 4))}},
              "ffm": {"k": {"kernel": jax.random.normal(keys[1], (1, 1, 4, 4))}},
              "conv_out": {"b": {"bias": jax.random.normal(keys[2], (4,))}}}
    tx_steps, schedule = create_optimizer(_clock_config("steps", name))
    tx_time, time_schedule = create_optimizer(_clock_config("time", name))
    state_steps, state_time = tx_steps.init(params), tx_time.init(params)
    # The same optimiser state either way: a checkpoint of one clock restores into the other.
    assert jax.tree_util.tree_structure(state_steps) == jax.tree_util.tree_structure(state_time)
    p_steps = p_time = params
    for step in range(8):
        grads = jax.tree_util.tree_map(lambda p, k=jax.random.fold_in(keys[3], step): jax.random.normal(k, p.shape),
                                       params)
        updates, state_steps = tx_steps.update(grads, state_steps, p_steps)
        p_steps = optax.apply_updates(p_steps, updates)
        updates, state_time = tx_time.update(grads, state_time, p_time)
        p_time = optax.apply_updates(p_time, scale_updates(updates, time_schedule(np.float32(step))))
    for a, b in zip(jax.tree_util.tree_leaves(p_steps), jax.tree_util.tree_leaves(p_time)):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)
    assert not np.allclose(p_steps["ffm"]["k"]["kernel"], params["ffm"]["k"]["kernel"])  # it did train


def test_budget_clock_is_the_elapsed_fraction_of_the_budget_carried_across_starts():
    ticks = iter([100.0, 130.0, 160.0, 160.5])
    clock = BudgetClock(budget_seconds=60.0, total_steps=1000, now=lambda: next(ticks))  # starts at 100
    assert clock.position() == pytest.approx(500.0)  # 30 of 60 s
    assert not clock.over_budget()  # 60 s: the budget is spent only past it
    assert clock.over_budget()
    resumed = BudgetClock(60.0, 1000, elapsed_before=45.0, now=iter([7.0, 13.0]).__next__)
    assert resumed.position() == pytest.approx(1000 * 51 / 60)  # 45 s before this start, 6 s since
    with pytest.raises(ValueError, match="budget > 0"):
        BudgetClock(0.0, 1000)


def test_budget_clock_schedule_spans_the_budget_left_after_the_start_ups():
    ticks = iter([100.0, 112.0, 112.0, 136.0, 136.0, 136.0, 160.5, 160.5])
    clock = BudgetClock(budget_seconds=60.0, total_steps=1000, now=lambda: next(ticks))  # starts at 100
    clock.begin()  # 12 s of start-up (compiling): spent from the budget, not from the schedule
    assert clock.position() == pytest.approx(0.0)
    assert clock.position() == pytest.approx(500.0)  # 24 of the 48 s left
    assert clock.elapsed() == pytest.approx(36.0) and clock.startup() == pytest.approx(12.0)
    assert not clock.over_budget() and clock.over_budget()  # 36 s, then 60.5 s of the 60
    # Resumed after 36 s (12 of start-up) with another 6 s of start-up: the 24 s trained are now 24 of 42.
    resumed = BudgetClock(60.0, 1000, elapsed_before=36.0, startup_before=12.0, now=iter([0.0, 6.0, 6.0]).__next__)
    resumed.begin()
    assert resumed.position() == pytest.approx(1000 * 24 / 42)
    with pytest.raises(ValueError, match="startup_before"):
        BudgetClock(60.0, 1000, elapsed_before=10.0, startup_before=20.0)
    spent = BudgetClock(60.0, 1000, elapsed_before=61.0, startup_before=61.0, now=lambda: 0.0)
    assert spent.position() == 1000  # the start-ups alone spent the budget: the schedule's end


def test_time_clock_without_a_budget_or_an_unknown_clock_is_refused():
    config = _clock_config("time")
    config.train.time_budget_minutes = 0.0
    with pytest.raises(ValueError, match="train.time_budget_minutes"):
        create_optimizer(config)
    config.optimizer.schedule_clock = "epochs"
    with pytest.raises(ValueError, match="schedule_clock='epochs'; expected one of"):
        schedule_clock(config)
