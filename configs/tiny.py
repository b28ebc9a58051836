r"""A tiny config for tests and smoke runs: a few steps of BiSeNetV2 on small demo images.

    python -m bisenet_jax.main --config configs/tiny.py --workdir /tmp/tiny

Expected: finishes in about a minute on a CPU; the numbers mean nothing beyond "it trains".
"""
from bisenet_jax.train.config import base_config, set_dataset


def get_config():
    config = base_config()
    config.model.name = "bisenetv2"
    set_dataset(config, "demo")
    config.data.crop_size = (64, 64)
    config.data.demo.num_train = 64
    config.data.demo.num_val = 8
    config.data.demo.image_size = (64, 96)
    config.train.batch_size = 4
    config.train.num_steps = 6
    config.train.log_every = 2
    config.train.eval_every = 6
    config.train.checkpoint_every = 3
    config.train.num_prediction_images = 2
    config.train.progress_bar = False
    config.optimizer.warmup_steps = 2
    config.eval.batch_size = 4
    return config
