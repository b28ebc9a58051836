r"""BiSeNetV2 on CamVid from scratch under a 30-minute budget on a 2-core CPU.

    python scripts/benchmark_camvid.py --model v2 --compare-torch

Expected: see the README's CamVid table.

The R18 CPU recipe with V2's optimiser (lr 5e-2, no head multiplier, as in camvid_bisenetv2.py)
and smaller crops, 192x256: V2 is the slowest of the three to train on this CPU.

Measured (README, CamVid section; idle 2-core machine, commit 43e8633): the JAX step (batch 8)
takes 2.00 s (3.5 CPU s; PyTorch 1.53 s). scripts/benchmark_camvid.py fitted 860 steps to
30 minutes and reached 29.8% val mIoU; the PyTorch reference, 1136 steps, 32.3%. num_steps below
leaves room for the 4 evaluations that run inside the budget with this config alone (main.py);
time_budget_minutes = 30 stops a slower run.
"""
from bisenet_jax.train.config import sibling_config


def get_config():
    config = sibling_config(__file__, "camvid_bisenetv1_r18_cpu")
    config.model.name = "bisenetv2"
    config.data.crop_size = (192, 256)
    config.optimizer.lr = 5e-2
    config.optimizer.head_lr_multiplier = 1.0
    config.train.num_steps = 840
    config.train.eval_every = 210
    config.train.checkpoint_every = 840
    config.optimizer.warmup_steps = 42
    return config
