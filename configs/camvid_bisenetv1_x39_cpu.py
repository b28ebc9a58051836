r"""BiSeNetV1-Xception39 on CamVid from scratch under a 30-minute budget on a 2-core CPU.

    python scripts/benchmark_camvid.py --model v1_x39 --compare-torch

Expected: see the README's CamVid table.

The R18 CPU recipe (camvid_bisenetv1_r18_cpu.py) with X39's learning rate (2.5e-2, as in
camvid_bisenetv1_x39.py). Measured JAX step (crop 256x320, batch 8): 8.4 s wall and 3.7 CPU s on the
shared 2-core machine (load 6-7; PyTorch: 20.5 s / 10.5 CPU s); on a quiet machine about 2.1 s, i.e.
about 780 steps in 30 minutes.
"""
from bisenet_jax.train.config import sibling_config


def get_config():
    config = sibling_config(__file__, "camvid_bisenetv1_r18_cpu")
    config.model.name = "bisenetv1_x39"
    config.optimizer.lr = 2.5e-2
    config.train.num_steps = 780
    config.train.eval_every = 195
    config.train.checkpoint_every = 780
    config.optimizer.warmup_steps = 39
    return config
