"""Run by test_sharding.py in a subprocess with 8 forced CPU devices (XLA_FLAGS must be set before
JAX starts): the same global batch trained on a 1-device mesh and on an 8-device mesh."""
from __future__ import annotations

import json
import sys

import jax
import numpy as np

from bisenet_jax.data import DemoSource, get_dataset_info
from bisenet_jax.train.config import base_config
from bisenet_jax.train.setup import create_train_setup


def run(num_devices: int, model_name: str, loss_name: str, batches: list[dict], dtype: str, size: int) -> tuple[list[float], dict]:
    config = base_config()
    config.model.dtype = dtype
    config.model.name = model_name
    config.model.num_classes = 5
    config.optimizer.warmup_steps = 1
    config.optimizer.total_steps = 100
    config.optimizer.lr = 0.01
    config.loss.name = loss_name
    config.mesh.num_devices = num_devices
    config.train.batch_size = len(batches[0]["image"])
    config.data.crop_size = (size, size)
    setup = create_train_setup(config, ignore_label=255)
    state = setup.state
    losses = []
    for batch in batches:
        global_batch = jax.device_put(batch, setup.batch_sharding)
        state, metrics = setup.train_step(state, global_batch)
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get({"params": state.params, "batch_stats": state.batch_stats})


def main(model_name: str, loss_name: str, dtype: str, size: int) -> None:
    assert jax.device_count() == 8, jax.devices()
    # Real (demo) images and labels: a well-conditioned problem, unlike random labels, where the
    # float32 rounding differences of the two layouts would be amplified by chaotic gradients.
    info = get_dataset_info("demo")
    source = DemoSource("train", num_examples=16, image_size=(size, size))
    records = [source[i] for i in range(16)]
    images = (np.stack([r["image"] for r in records]) / 255.0 - np.asarray(info.mean)) / np.asarray(info.std)
    labels = np.stack([r["label"] for r in records]).astype(np.int32)
    batches = [{"image": images[i:i + 8].astype(np.float32), "label": labels[i:i + 8]} for i in (0, 8)]
    losses_1, variables_1 = run(1, model_name, loss_name, batches, dtype, size)
    losses_8, variables_8 = run(8, model_name, loss_name, batches, dtype, size)
    leaves_1 = jax.tree_util.tree_leaves(variables_1)
    leaves_8 = jax.tree_util.tree_leaves(variables_8)
    # Relative error of the whole parameter vector (per-leaf ratios are meaningless for leaves that
    # start at zero, such as BN biases, after two small steps).
    diff = np.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(leaves_1, leaves_8)))
    param_error = diff / np.sqrt(sum(float(np.sum(a ** 2)) for a in leaves_1))
    errors = [float(np.abs(a - b).max()) for a, b in zip(leaves_1, leaves_8)]
    worst = jax.tree_util.tree_leaves_with_path(variables_1)[int(np.argmax(errors))][0]
    loss_error = max(abs(a - b) / abs(a) for a, b in zip(losses_1, losses_8))
    print(json.dumps({"losses_1": losses_1, "losses_8": losses_8, "param_error": param_error,
                      "loss_error": loss_error, "max_abs_param_diff": max(errors),
                      "worst_leaf": jax.tree_util.keystr(worst)}))


if __name__ == "__main__":
    model_name, loss_name, dtype, size = sys.argv[1:5]
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    main(model_name, loss_name, dtype, int(size))
