"""The one training setup: mesh -> model -> abstract state -> shardings -> state under jit -> compiled step.

big_vision's order: shapes come from ``jax.eval_shape``, the shardings are derived from them, the
state is created directly on its shardings under ``jax.jit(out_shardings=...)``, and the step is
jitted with the state donated. The learning-rate schedule is built once and handed to both the
optimizer and the step. The training loop, both benchmarks and the tests all start here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from bisenet_jax import xla_flags
from bisenet_jax.models import create_model
from bisenet_jax.train.optim import create_optimizer
from bisenet_jax.train.state import TrainState, batch_sharding, create_mesh, replicated
from bisenet_jax.train.step import compile_train_step


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    mesh: Mesh
    model: nn.Module
    state: TrainState  # on its shardings (replicated over the mesh)
    state_shardings: Any
    schedule: optax.Schedule
    train_step: Callable[[TrainState, dict], tuple[TrainState, dict]]  # jitted, state donated
    batch_sharding: NamedSharding
    # The train step's XLA compiler options (bisenet_jax/xla_flags.py); xla_flags.describe() for the log.
    step_options: dict = dataclasses.field(default_factory=dict)
    init_options: dict = dataclasses.field(default_factory=dict)  # the initialisation program's

    def abstract_state(self) -> Any:
        """ShapeDtypeStructs of the state on its shardings: the restore target of a checkpoint."""
        return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                      self.state, self.state_shardings)


def build_model(config) -> nn.Module:
    return create_model(config.model.name, config.model.num_classes, dtype=config.model.dtype,
                        aux_heads=config.model.aux_heads, kernels=config.model.kernels)


def create_train_setup(config, *, ignore_label: int) -> TrainSetup:
    """Everything a training run needs before its first batch; the input shape is ``config.data.crop_size``."""
    mesh = create_mesh(config.mesh.num_devices)
    if config.train.batch_size % mesh.size:
        raise ValueError(f"train.batch_size={config.train.batch_size} is not divisible by the {mesh.size} "
                         "devices of the mesh")
    model = build_model(config)
    tx, schedule = create_optimizer(config)
    crop_h, crop_w = config.data.crop_size
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(config.train.seed))  # raw uint32 keys

    def init(rng):
        variables = model.init(rng, jnp.zeros((1, crop_h, crop_w, 3), jnp.float32), train=False)
        return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                                 batch_stats=variables.get("batch_stats", {}), rng=dropout_rng)

    abstract = jax.eval_shape(init, init_rng)
    shardings = jax.tree_util.tree_map(lambda _: replicated(mesh), abstract)
    # Compiled with its own options: the one-off program's compilation is mostly LLVM (xla_flags.py).
    init_options = xla_flags.init_options()
    state = jax.jit(init, out_shardings=shardings).lower(init_rng).compile(compiler_options=init_options)(init_rng)
    step_options = xla_flags.train_step_options()
    train_step = compile_train_step(config, shardings, batch_sharding(mesh), replicated(mesh), schedule,
                                    ignore_label, kernels=model.kernels, compiler_options=step_options)
    return TrainSetup(mesh, model, state, shardings, schedule, train_step, batch_sharding(mesh), step_options,
                      init_options)
