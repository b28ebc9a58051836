"""Optimisers and learning-rate schedules (optax).

The recipe of the PyTorch BiSeNet implementations: SGD with momentum, warmup that grows the rate
exponentially from ``warmup_start_factor * lr`` over ``warmup_steps``, then poly decay with power
0.9 to zero at ``total_steps``; weight decay on convolution kernels only (not on BN parameters or
biases); a learning-rate multiplier (10x) on the fusion module and the heads.

The schedule runs on one of two clocks (``optimizer.schedule_clock``): ``"steps"`` (the default,
the rate of step ``t`` is ``schedule(t)``) or ``"time"``: the rate follows the elapsed fraction of
``train.time_budget_minutes`` left after the start-up (compiling the step), ``schedule(total_steps *
trained / (budget - startup))``, so warmup and decay end when the budget does however fast the steps
turn out (budgeted training: the schedule of a run whose step count is not known in advance), and
the warmup starts with the first step. ``BudgetClock`` is that position; the train step then
scales the optimiser's unit-rate updates by it (``scale_updates``).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util


def warmup_poly_schedule(lr: float, total_steps: int, warmup_steps: int = 0, warmup_start_factor: float = 0.1,
                         power: float = 0.9, warmup: str = "exp") -> optax.Schedule:
    """lr * factor(step): exponential (or linear) warmup, then (1 - progress) ** power."""
    total_steps, warmup_steps = int(total_steps), int(warmup_steps)
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        if warmup_steps > 0:
            alpha = jnp.clip(step / warmup_steps, 0.0, 1.0)
            warm = (warmup_start_factor ** (1.0 - alpha) if warmup == "exp"
                    else warmup_start_factor + (1.0 - warmup_start_factor) * alpha)
        else:
            warm = 1.0
        progress = jnp.clip((step - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
        decay = (1.0 - progress) ** power
        return lr * jnp.where(step < warmup_steps, warm, decay)

    return schedule


SCHEDULE_CLOCKS = ("steps", "time")


def schedule_clock(config: Any) -> str:
    """``config.optimizer.schedule_clock``, checked against the budget it needs."""
    clock = config.optimizer.get("schedule_clock", "steps")
    if clock not in SCHEDULE_CLOCKS:
        raise ValueError(f"optimizer.schedule_clock={clock!r}; expected one of {SCHEDULE_CLOCKS}")
    if clock == "time" and not config.train.time_budget_minutes > 0:
        raise ValueError("optimizer.schedule_clock='time' follows the elapsed fraction of train.time_budget_minutes, "
                         f"which is {config.train.time_budget_minutes}: set --config.train.time_budget_minutes to the "
                         "run's budget (minutes > 0) or use schedule_clock='steps'")
    return clock


class BudgetClock:
    """Where a time-driven schedule stands: the virtual step ``total_steps * trained / (budget - startup)``.

    The budget counts every second since the clock was made (``elapsed``); the schedule counts
    only the seconds after :meth:`begin`, which the loop calls once a start is ready to train
    (its first batch loaded, its step compiled). The start-up before it is spent from the budget
    but not from the schedule, which spans the rest of the budget: otherwise the warmup (5% of the
    budget in the CPU recipes) would partly pass while the step compiles, and the first steps
    would train at a higher rate than the recipe's. (JAX's 20-30 s compilations used up a third
    of V2's 90-second warmup in the CamVid races before this; docs/benchmarks.md.) Without a
    ``begin()`` the whole elapsed time counts.

    ``elapsed_before`` / ``startup_before``: seconds of the budget, and of start-ups, spent by
    earlier starts of the same run (a resumed run continues its schedule and its budget where it
    stopped). ``now`` is the wall clock (a parameter for tests).
    """

    def __init__(self, budget_seconds: float, total_steps: int, elapsed_before: float = 0.0,
                 startup_before: float = 0.0, now: Callable[[], float] = time.time):
        if budget_seconds <= 0:
            raise ValueError(f"a time-driven schedule needs a budget > 0 seconds, got {budget_seconds}")
        if not 0.0 <= startup_before <= max(0.0, elapsed_before):
            raise ValueError(f"startup_before ({startup_before} s) must be in [0, elapsed_before "
                             f"({elapsed_before} s)]")
        self.budget_seconds, self.total_steps = float(budget_seconds), int(total_steps)
        self.elapsed_before, self.startup_before, self._now = float(elapsed_before), float(startup_before), now
        self._start = now()
        self._startup = 0.0  # this start's, set by begin()

    def begin(self) -> None:
        """This start is ready to train: the seconds since the clock was made are its start-up."""
        self._startup = self._now() - self._start

    def elapsed(self) -> float:
        """Seconds of the budget spent, earlier starts included."""
        return self.elapsed_before + self._now() - self._start

    def startup(self) -> float:
        """Seconds of start-up (before ``begin()``) in the budget spent, earlier starts included."""
        return self.startup_before + self._startup

    def position(self) -> np.ndarray:
        """The schedule's virtual step now (float32 scalar; beyond ``total_steps`` once the budget is spent)."""
        startup = self.startup()
        trained, span = self.elapsed() - startup, self.budget_seconds - startup
        if span <= 0:  # the start-ups alone spent the budget
            return np.float32(self.total_steps)
        return np.float32(self.total_steps * trained / span)

    def over_budget(self) -> bool:
        return self.elapsed() > self.budget_seconds


def scale_updates(updates: Any, lr: jax.Array) -> Any:
    """The updates of an optimiser built at unit rate, at rate ``lr``: exact for SGD (momentum and
    weight decay act before the rate, as in PyTorch) and AdamW (optax applies the rate last)."""
    return jax.tree_util.tree_map(lambda u: (lr * u).astype(u.dtype), updates)


def is_conv_kernel(path: tuple[str, ...], value: Any) -> bool:
    return path[-1] == "kernel" and getattr(value, "ndim", 0) == 4


def decay_mask(params: Any) -> Any:
    """True for convolution kernels: the only parameters that get weight decay."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: is_conv_kernel(k, v) for k, v in flat.items()})


def lr_group_labels(params: Any, head_modules: tuple[str, ...]) -> Any:
    """'head' for parameters under one of ``head_modules`` (top-level names), else 'base'."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: "head" if k[0] in head_modules else "base" for k in flat})


def create_optimizer(config: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Build the optimiser and its schedule from ``config.optimizer`` (see ``bisenet_jax.train.config``).

    With ``schedule_clock="time"`` the optimiser runs at unit rate (times the head multiplier) and
    the train step scales its updates by ``schedule(BudgetClock.position())``; the optimiser state
    has the same structure on both clocks.

    The weight-decay mask and the head/base groups are functions of the parameter tree, applied by
    optax when the optimizer state is initialised, so no parameters are needed here.
    """
    opt = config.optimizer
    schedule = warmup_poly_schedule(opt.lr, opt.total_steps, opt.warmup_steps, opt.warmup_start_factor,
                                    opt.poly_power, opt.warmup)
    # On the time clock the rate is applied by the step; a constant callable (not a float) keeps
    # optax's schedule state, so checkpoints of either clock restore into the other.
    rate = (lambda count: jnp.ones((), jnp.float32)) if schedule_clock(config) == "time" else schedule

    def make(lr_schedule: Callable) -> optax.GradientTransformation:
        if opt.name == "sgd":
            return optax.chain(
                # PyTorch SGD adds wd * p to the gradient before momentum; so does this order.
                optax.add_decayed_weights(opt.weight_decay, mask=decay_mask),
                optax.sgd(lr_schedule, momentum=opt.momentum or None, nesterov=opt.nesterov),
            )
        if opt.name == "adamw":
            return optax.adamw(lr_schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay, mask=decay_mask)
        raise ValueError(f"unknown optimizer {opt.name!r}; expected 'sgd' or 'adamw'")

    head_modules = tuple(opt.head_modules)
    if opt.head_lr_multiplier != 1.0 and head_modules:
        head_rate = lambda step: opt.head_lr_multiplier * rate(step)
        tx = optax.multi_transform({"base": make(rate), "head": make(head_rate)},
                                   lambda p: lr_group_labels(p, head_modules))
    else:
        tx = make(rate)
    if opt.grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
    return tx, schedule
