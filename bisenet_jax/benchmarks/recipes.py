"""The recipes the benchmarks train: BiSeNet on CamVid from scratch in 30 minutes of a 2-core CPU.

``configs/camvid_<model>_cpu.py`` return ``camvid_cpu_recipe(model)``, so that ``main.py`` trains
exactly what ``scripts/benchmark_camvid.py --model <model>`` does; the benchmark takes the recipe
from here and never reads a file of the repository. How the numbers were chosen, with the
measurements: docs/benchmarks.md, "CamVid CPU recipes".
"""
from __future__ import annotations

import ml_collections

from bisenet_jax.train.config import base_config, set_dataset

# The benchmark's --model names and the networks they train.
CAMVID_CPU_MODELS = {"v1_r18": "bisenetv1_r18", "v1_x39": "bisenetv1_x39", "v2": "bisenetv2"}


def camvid_cpu_recipe(model: str, root: str = "") -> ml_collections.ConfigDict:
    """The full CamVid recipe (configs/camvid_*.py) shrunk to a 30-minute budget on a 2-core CPU.

    ``model`` is a key of ``CAMVID_CPU_MODELS``; ``root`` the CamVid folder (SegNet release).
    """
    if model not in CAMVID_CPU_MODELS:
        raise ValueError(f"unknown CamVid CPU recipe {model!r}; expected one of {', '.join(CAMVID_CPU_MODELS)}")
    config = base_config()
    config.model.name = CAMVID_CPU_MODELS[model]
    set_dataset(config, "camvid", root)
    # About 40% of the full recipe's pixels per step, and lighter augmentation for about 18 epochs.
    config.data.crop_size = (256, 320)
    config.data.scale_range = (0.75, 1.5)
    config.data.color_jitter = 0.2
    config.data.num_workers = 0  # 2 cores: the transforms run in threads of the training process
    config.data.num_threads = 2
    # The 367 training images decoded once (0.24 GiB): decoding took 85-90% of the pipeline's CPU time,
    # which the two cores otherwise take from the train step (docs/profile.md, session 37).
    config.data.cache_gb = 1.0
    config.train.batch_size = 8
    config.train.time_budget_minutes = 30.0
    config.train.log_every = 10
    config.train.num_prediction_images = 0  # would eat into the budget
    config.optimizer.lr = 2e-2  # twice the full recipe's: no ImageNet backbone to protect, a short schedule
    config.eval.batch_size = 1  # 101 val images: no padded batch at the end
    num_steps = 800  # what 30 minutes reach on the 2-core machine, the 4 evaluations included
    if model == "v1_x39":
        config.optimizer.lr = 2.5e-2  # X39's full-recipe rate
        num_steps = 1320
    elif model == "v2":
        config.data.crop_size = (192, 256)  # V2 is the slowest of the three to train on this CPU
        config.optimizer.lr = 5e-2  # V2's full recipe: one rate for every parameter
        config.optimizer.head_lr_multiplier = 1.0
        num_steps = 840
    config.train.num_steps = num_steps  # also the poly schedule's end (optimizer.total_steps)
    config.optimizer.warmup_steps = num_steps // 20
    config.train.eval_every = num_steps // 4  # a 4-point learning curve
    config.train.checkpoint_every = num_steps  # saved at the evaluations only: saving eats into the budget
    return config
