"""Does the input pipeline keep up? The real training loop's images/s against the bare train step's.

Protocol, for one training config (e.g. a CamVid CPU recipe), all in this process, one after the other:

1. ``step``: the config's own compiled train step (``create_train_setup``) on one fixed random batch
   of the config's batch size and crop, ``warmup`` untimed then ``steps`` timed calls, median: the
   train step alone, as ``scripts/benchmark_train.py`` measures it.
2. ``data``: the config's training iterator alone (decode, augment, batch; grain), ``steps`` batches
   after ``warmup``: images/s and CPU seconds per batch, what the pipeline costs the cores it shares
   with XLA when it runs in threads of the training process (``data.num_workers = 0``).
3. ``loop``: ``train_and_evaluate`` itself in a temporary workdir for ``warmup + steps`` steps with
   evaluation off and one save at the end; images/s as the loop logs it (``metrics.jsonl``), over the
   windows after the first (compilation). This is what a user's run reaches.

The ratio loop / step says how much the data path (and the loop's own work) costs: 1.00 = nothing.
"""
from __future__ import annotations

import json
import tempfile
import time
from typing import Any

import ml_collections
import numpy as np

from bisenet_jax import data as data_lib
from bisenet_jax.benchmarks import machine, train_speed
from bisenet_jax.train.loop import train_and_evaluate
from bisenet_jax.train.monitoring import METRICS_FILE


def step_speed(config: ml_collections.ConfigDict, warmup: int, steps: int) -> dict[str, Any]:
    info = data_lib.get_dataset_info(config.data)
    height, width = config.data.crop_size
    batch = train_speed.random_batch(config.train.batch_size, height, width, info.num_classes)
    batch["label"][:, :4] = info.ignore_label  # a few ignored pixels, as real labels have
    step = train_speed.compile_jax_step(config, batch, ignore_label=info.ignore_label)
    median = float(np.median(train_speed.step_times(step.run, warmup, steps)))
    return {"step_seconds_median": median, "images_per_second": config.train.batch_size / median}


def data_speed(config: ml_collections.ConfigDict, warmup: int, steps: int) -> dict[str, Any]:
    iterator = data_lib.create_train_iterator(config.data, config.train.batch_size, seed=config.train.seed)
    try:
        for _ in range(warmup):
            next(iterator)
        cpu0, start = machine.cpu_seconds(), time.perf_counter()
        for _ in range(steps):
            next(iterator)
        wall, cpu = time.perf_counter() - start, machine.cpu_seconds() - cpu0
    finally:
        iterator.close()  # its threads, and its decoded-record cache, are not kept through the loop
    return {"images_per_second": steps * config.train.batch_size / wall, "cpu_seconds_per_batch": cpu / steps,
            "wall_seconds_per_batch": wall / steps}


def loop_speed(config: ml_collections.ConfigDict, warmup: int, steps: int) -> dict[str, Any]:
    config = ml_collections.ConfigDict(config.to_dict())
    log_every = max(1, min(10, steps // 2))
    config.train.num_steps = warmup + steps + 1  # + the compiling first step
    config.optimizer.total_steps = config.train.num_steps
    config.optimizer.warmup_steps = 1
    config.train.log_every = log_every
    config.train.eval_every = -1
    config.train.checkpoint_every = config.train.num_steps
    config.train.time_budget_minutes = 0.0
    config.train.progress_bar = False
    config.train.num_prediction_images = 0
    with tempfile.TemporaryDirectory(prefix="loop_speed_") as workdir:
        cpu0 = machine.cpu_seconds()
        train_and_evaluate(config, workdir)
        cpu = machine.cpu_seconds() - cpu0
        with open(f"{workdir}/{METRICS_FILE}") as f:
            records = [json.loads(line) for line in f]
    rates = [(r["step"], r["train/images_per_second"]) for r in records if "train/images_per_second" in r]
    # Windows ending after the warm-up steps (the first window also holds the first steps after compiling).
    timed = [rate for step, rate in rates if step > warmup + 1] or [rate for _, rate in rates]
    return {"images_per_second": float(np.median(timed)), "windows": rates, "log_every": log_every,
            "process_cpu_seconds": cpu}


def compare(config: ml_collections.ConfigDict, warmup: int = 3, steps: int = 20) -> dict[str, Any]:
    """The three measurements of the module docstring and the ratios, with the environment."""
    result = {"environment": machine.environment(), "model": config.model.name, "dataset": config.data.name,
              "batch_size": config.train.batch_size, "crop": list(config.data.crop_size),
              "data_threads": config.data.num_threads, "data_workers": config.data.num_workers,
              "cache_gb": float(config.data.get("cache_gb", 0.0))}
    result["step"] = step_speed(config, warmup, steps)
    result["data"] = data_speed(config, warmup, steps)
    result["loop"] = loop_speed(config, warmup, steps)
    result["loop_over_step"] = result["loop"]["images_per_second"] / result["step"]["images_per_second"]
    return result
