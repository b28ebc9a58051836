r"""BiSeNetV2 on Cityscapes, trained from scratch as in the paper.

    python -m bisenet_jax.main --config configs/cityscapes_bisenetv2.py \
        --config.data.root=/data/cityscapes --workdir runs/cityscapes_v2

Expected: 73.4 mIoU on val in the paper (74.95 ss / 76.53 msf for the widely used PyTorch
implementation). Inference at 1024x512 with logits resized to 2048x1024 is `--config.eval.*`.
"""
from bisenet_jax.train.config import base_config, set_dataset


def get_config():
    config = base_config()
    config.model.name = "bisenetv2"
    set_dataset(config, "cityscapes", "")
    config.data.crop_size = (512, 1024)
    config.data.scale_range = (0.25, 2.0)
    config.data.color_jitter = 0.4
    config.data.num_workers = 8
    config.train.batch_size = 16
    config.train.num_steps = 150_000
    config.optimizer.lr = 5e-2
    config.optimizer.weight_decay = 5e-4
    config.optimizer.warmup_steps = 1_000
    config.optimizer.head_lr_multiplier = 1.0  # the V2 recipe uses one rate for every parameter
    config.eval.batch_size = 1
    return config
