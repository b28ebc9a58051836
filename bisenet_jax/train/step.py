"""The train step (one jitted function) and its compilation onto the mesh."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from bisenet_jax import xla_flags
from bisenet_jax.models.kernels import Kernels
from bisenet_jax.train.losses import segmentation_loss
from bisenet_jax.train.optim import scale_updates, schedule_clock

# The generator of the dropout masks (BiSeNetV2's heads). JAX's default, threefry2x32, lowers on CPU to a rolled
# loop whose carries XLA copies on every trip: V2's five masks took ~55 ms of its 1.6 s step on the Zen 3 VM.
# Threefry4x32 (the same Random123 family, four-word blocks) is straight-line elementwise code, about 3.3x faster for
# those masks on the Zen 3 VM (docs/profile.md). Philox4x32 was ~10% faster still but its lowering fails in a
# sharded jit (jax 0.10: "Unable to convert MHLO to StableHLO" on its mulhi). One generator on every backend, so a
# step's masks do not depend on the device.
DROPOUT_PRNG = "threefry4x32"


def dropout_key(rng: jax.Array, step: jax.Array) -> jax.Array:
    """The step's dropout key, a ``DROPOUT_PRNG`` key made from the state's raw two-word threefry ``rng`` (which
    checkpoints store, so their layout does not change) folded with ``step``: the two halves of its split, as
    the four words threefry4x32 takes."""
    return jax.random.wrap_key_data(jax.random.split(jax.random.fold_in(rng, step)).reshape(4), impl=DROPOUT_PRNG)


def train_step(state, batch, position=None, *, loss_name: str, ignore_label: int, aux_weight: float, ohem_thresh: float,
               schedule, kernels: Kernels | str = "auto"):
    """One SGD step on a global batch {"image": (B, h, w, 3) float32, "label": (B, h, w) int32}.

    A non-finite loss leaves the state unchanged (``finite`` is reported), so the caller can stop
    with the last good parameters and name the step. ``position``: on the time clock, the schedule's
    virtual step (``optim.BudgetClock.position``); the optimiser then runs at unit rate and its
    updates are scaled by ``schedule(position)``. ``None``: the rate is ``schedule(state.step)``,
    applied by the optimiser itself.
    """
    dropout_rng = dropout_key(state.rng, state.step)

    def loss_fn(params):
        (logits, aux_logits), updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
            mutable=["batch_stats"], rngs={"dropout": dropout_rng})
        total, terms = segmentation_loss(logits, aux_logits, batch["label"], name=loss_name,
                                         ignore_label=ignore_label, aux_weight=aux_weight, ohem_thresh=ohem_thresh,
                                         kernels=kernels)
        return total, (updates["batch_stats"], terms)

    (loss, (batch_stats, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    if position is None:
        lr = schedule(state.step)
        new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    else:
        lr = schedule(position)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, scale_updates(updates, lr))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, batch_stats=batch_stats)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics = {"loss": loss, **terms, "lr": lr, "grad_norm": grad_norm, "finite": finite}
    return new_state, metrics


def compile_train_step(config, state_shardings, data_sharding, replicated_sharding, schedule, ignore_label: int,
                       kernels: Kernels | str = "auto", compiler_options: dict[str, str] | None = None):
    """jit the step on the mesh: state replicated and donated, batch sharded over ``data``; on the
    time clock (``optimizer.schedule_clock``) a third argument, the schedule's position, replicated.

    ``kernels`` is the model's bundle, so that the loss (OHEM's selection) makes the model's choice.
    ``compiler_options``: the program's XLA options, by default ``xla_flags.train_step_options()``
    (the setup passes the same options explicitly).
    """
    step = functools.partial(train_step, loss_name=config.loss.name, ignore_label=ignore_label,
                             aux_weight=config.loss.aux_weight, ohem_thresh=config.loss.ohem_thresh,
                             schedule=schedule, kernels=kernels)
    # On CPU, the measured compiler options of bisenet_jax/xla_flags.py, for this program only.
    if compiler_options is None:
        compiler_options = xla_flags.train_step_options()
    in_shardings = (state_shardings, data_sharding)
    if schedule_clock(config) == "time":
        in_shardings += (replicated_sharding,)
    return jax.jit(step, in_shardings=in_shardings,
                   out_shardings=(state_shardings, replicated_sharding), donate_argnums=(0,),
                   compiler_options=compiler_options or None)
