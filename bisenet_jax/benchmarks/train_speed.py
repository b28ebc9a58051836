"""Train-step throughput and compile time, JAX against the PyTorch reference on the same machine.

Protocol: one model, one global batch of random normalised images and random labels at a fixed
crop; the full training step (forward with auxiliary heads, OHEM loss on every head, backward,
SGD update with the recipe's parameter groups). JAX: the jitted, donated step of
``bisenet_jax.train.step`` on a 1-device mesh, compiled once (compile time reported, never timed);
PyTorch: the reference module of ``bisenet_jax.convert.torch_models`` in eager training mode with
the same loss and SGD groups (``bisenet_jax.benchmarks.torch_reference``), ``torch.set_num_threads``
= the CPUs available. ``warmup`` untimed steps, then ``steps`` timed ones; the median step time
gives images/s.
"""
from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np

from bisenet_jax.train.config import base_config
from bisenet_jax.train.state import batch_sharding, build_model, create_mesh, create_train_state, replicated
from bisenet_jax.train.step import compile_train_step


def _batch(batch_size: int, height: int, width: int, num_classes: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"image": rng.standard_normal((batch_size, height, width, 3), dtype=np.float32),
            "label": rng.integers(0, num_classes, (batch_size, height, width)).astype(np.int32)}


def _config(model: str, num_classes: int, dtype: str):
    config = base_config()
    config.model.name = model
    config.model.num_classes = num_classes
    config.model.dtype = dtype
    config.optimizer.warmup_steps = 10
    config.optimizer.total_steps = 1000
    return config


def jax_train_speed(model: str, batch_size: int, height: int, width: int, *, num_classes: int = 19,
                    dtype: str = "float32", warmup: int = 2, steps: int = 5) -> dict[str, Any]:
    config = _config(model, num_classes, dtype)
    mesh = create_mesh(1)
    net = build_model(config)
    state, schedule, shardings = create_train_state(config, net, mesh, jax.random.PRNGKey(0), (1, height, width, 3))
    step = compile_train_step(config, shardings, batch_sharding(mesh), replicated(mesh), schedule, 255)
    batch = jax.device_put(_batch(batch_size, height, width, num_classes), batch_sharding(mesh))
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - t0
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics["loss"])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return _result("jax", model, batch_size, height, width, dtype, times, compile_seconds)


def torch_train_speed(model: str, batch_size: int, height: int, width: int, *, num_classes: int = 19,
                      warmup: int = 2, steps: int = 5, num_threads: int = 0) -> dict[str, Any]:
    import torch

    from bisenet_jax.benchmarks import torch_reference
    from bisenet_jax.convert.torch_models import build_torch_model

    torch.set_num_threads(num_threads or len(os.sched_getaffinity(0)))
    config = _config(model, num_classes, "float32")
    net = build_torch_model(model, num_classes, aux_heads=True).train()
    optimizer = torch_reference.create_optimizer(net, config.optimizer)
    images, labels = torch_reference.to_torch(_batch(batch_size, height, width, num_classes))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        logits, aux = net(images)
        loss, _ = torch_reference.segmentation_loss(logits, aux, labels, config.loss, 255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return _result("torch", model, batch_size, height, width, "float32", times, 0.0)


def _result(framework, model, batch_size, height, width, dtype, times, compile_seconds) -> dict[str, Any]:
    median = float(np.median(times))
    return {"framework": framework, "model": model, "batch_size": batch_size, "height": height, "width": width,
            "precision": dtype, "step_seconds_median": median, "step_seconds_min": float(np.min(times)),
            "step_seconds_max": float(np.max(times)), "images_per_second": batch_size / median,
            "compile_seconds": compile_seconds, "steps": len(times)}
