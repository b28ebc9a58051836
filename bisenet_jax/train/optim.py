"""Optimisers and learning-rate schedules (optax).

The recipe of the PyTorch BiSeNet implementations: SGD with momentum, warmup that grows the rate
exponentially from ``warmup_start_factor * lr`` over ``warmup_steps``, then poly decay with power
0.9 to zero at ``total_steps``; weight decay on convolution kernels only (not on BN parameters or
biases); a learning-rate multiplier (10x) on the fusion module and the heads.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
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

    The weight-decay mask and the head/base groups are functions of the parameter tree, applied by
    optax when the optimizer state is initialised, so no parameters are needed here.
    """
    opt = config.optimizer
    schedule = warmup_poly_schedule(opt.lr, opt.total_steps, opt.warmup_steps, opt.warmup_start_factor,
                                    opt.poly_power, opt.warmup)

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
        head_schedule = lambda step: opt.head_lr_multiplier * schedule(step)
        tx = optax.multi_transform({"base": make(schedule), "head": make(head_schedule)},
                                   lambda p: lr_group_labels(p, head_modules))
    else:
        tx = make(schedule)
    if opt.grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
    return tx, schedule
