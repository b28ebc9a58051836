r"""The main job: BiSeNetV1-R18 on the embedded demo dataset (procedural shapes, no download).

    python -m bisenet_jax.main --config configs/demo.py --workdir runs/demo

Expected: val mIoU >= 0.80 in under 10 minutes on a 2-core CPU (the measured run: docs/benchmarks.md).
"""
from bisenet_jax.train.config import base_config, set_dataset


def get_config():
    config = base_config()
    config.model.name = "bisenetv1_r18"
    set_dataset(config, "demo")
    config.data.crop_size = (128, 128)
    config.data.scale_range = (0.75, 1.5)
    config.data.color_jitter = 0.2
    config.data.num_workers = 0
    config.data.demo.num_train = 2000
    config.data.demo.num_val = 100
    config.train.batch_size = 8
    config.train.num_steps = 240
    config.train.log_every = 10
    config.train.eval_every = 80
    config.train.checkpoint_every = 80
    # AdamW converges in a few hundred steps from scratch; the SGD recipe of the paper needs more.
    config.optimizer.name = "adamw"
    config.optimizer.lr = 2e-3
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_steps = 20
    config.optimizer.warmup = "linear"
    config.optimizer.head_lr_multiplier = 1.0
    config.loss.name = "ce"
    config.eval.batch_size = 20
    return config
