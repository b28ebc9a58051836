r"""BiSeNetV2 on CamVid from scratch under a 30-minute budget on a 2-core CPU.

    python scripts/benchmark_camvid.py --model v2 --compare-torch

Expected: see the README's CamVid table.

The R18 CPU recipe with V2's optimiser (lr 5e-2, no head multiplier, as in camvid_bisenetv2.py)
and smaller crops, 192x256: V2 is the slowest of the three to train with JAX on this CPU. Measured
JAX step, batch 8, on the shared 2-core machine: 32 s wall / 17 CPU s at crop 256x320 (load 6-8),
three times R18's, and 14 s wall / 9.1 CPU s at 192x256 (load 5-7; PyTorch: 11.9 s / 7.5 CPU s).
Most of it is XLA:CPU's depthwise convolutions. On a quiet machine about 5 s per step, i.e. about
300 steps in 30 minutes.
"""
from bisenet_jax.train.config import sibling_config


def get_config():
    config = sibling_config(__file__, "camvid_bisenetv1_r18_cpu")
    config.model.name = "bisenetv2"
    config.data.crop_size = (192, 256)
    config.optimizer.lr = 5e-2
    config.optimizer.head_lr_multiplier = 1.0
    config.train.num_steps = 300
    config.train.eval_every = 75
    config.train.checkpoint_every = 300
    config.optimizer.warmup_steps = 15
    return config
