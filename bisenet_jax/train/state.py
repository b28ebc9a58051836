"""Train state, device mesh and the sharded initialisation (big_vision's order of setup).

The batch is sharded over the ``data`` axis of a 1-D mesh of every device of every process;
parameters, BN statistics and optimiser state are replicated. Under ``jax.jit`` the BN batch
statistics are then computed over the global batch: synchronised BatchNorm with no extra code.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bisenet_jax.models import create_model
from bisenet_jax.train.optim import create_optimizer


class TrainState(train_state.TrainState):
    batch_stats: Any = None
    rng: jax.Array = None  # raw uint32 dropout key (orbax-serialisable), folded with the step


def create_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D ``data`` mesh over ``num_devices`` devices (0 = all, across every process).

    The axis is ``Auto``: data parallelism needs no explicit sharding of intermediate values,
    XLA's propagation inserts the cross-device reductions (BN statistics, gradients).
    """
    devices = jax.devices()
    n = num_devices or len(devices)
    if n > len(devices):
        raise ValueError(f"mesh.num_devices={n} but only {len(devices)} devices are visible")
    return jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices[:n])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis over ``data``, everything else whole."""
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def build_model(config):
    return create_model(config.model.name, config.model.num_classes, dtype=config.model.dtype,
                        aux_heads=config.model.aux_heads)


def create_train_state(config, model, mesh: Mesh, rng: jax.Array, input_shape: tuple[int, ...]):
    """Create the state directly on its (replicated) shardings under jit; returns (state, schedule, shardings)."""
    init_rng, dropout_rng = jax.random.split(rng)  # raw uint32 keys (jax.random.PRNGKey)
    dummy = jnp.zeros(input_shape, jnp.float32)

    def init(rng):
        variables = model.init(rng, dummy, train=False)
        tx, _ = create_optimizer(config, variables["params"])
        return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                                 batch_stats=variables.get("batch_stats", {}), rng=dropout_rng)

    abstract = jax.eval_shape(init, init_rng)
    shardings = jax.tree_util.tree_map(lambda _: replicated(mesh), abstract)
    state = jax.jit(init, out_shardings=shardings)(init_rng)
    _, schedule = create_optimizer(config, abstract.params)
    return state, schedule, shardings


def count_params(params: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
