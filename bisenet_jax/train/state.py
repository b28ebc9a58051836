"""Train state and the device mesh with its shardings (the setup that uses them: ``train/setup.py``).

The batch is sharded over the ``data`` axis of a 1-D mesh of every device of every process;
parameters, BN statistics and optimiser state are replicated. Under ``jax.jit`` the BN batch
statistics are then computed over the global batch: synchronised BatchNorm with no extra code.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


class TrainState(train_state.TrainState):
    batch_stats: Any = None
    rng: jax.Array = None  # raw uint32 threefry key (orbax-serialisable); step.dropout_key makes each step's key


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


def count_params(params: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
