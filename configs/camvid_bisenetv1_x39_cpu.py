r"""BiSeNetV1-Xception39 on CamVid from scratch under a 30-minute budget on a 2-core CPU.

    python scripts/benchmark_camvid.py --model v1_x39 --compare-torch

Expected: see the README's CamVid table.

The R18 CPU recipe (camvid_bisenetv1_r18_cpu.py) with X39's learning rate (2.5e-2, as in
camvid_bisenetv1_x39.py).

Measured (README, CamVid section; idle 2-core machine, commit 43e8633): the JAX step (crop 256x320,
batch 8) took 1.30 s in calibration and 1.18 s in the run (PyTorch 0.83 s and 0.80 s).
scripts/benchmark_camvid.py fitted 1320 steps to 30 minutes and reached 45.1% val mIoU; the PyTorch
reference, 2104 steps, 53.9%. num_steps below is that fit; with this config alone (main.py) the
4 evaluations (about 5 s each here) run inside the budget, and time_budget_minutes = 30 stops a
slower run.
"""
from bisenet_jax.train.config import sibling_config


def get_config():
    config = sibling_config(__file__, "camvid_bisenetv1_r18_cpu")
    config.model.name = "bisenetv1_x39"
    config.optimizer.lr = 2.5e-2
    config.train.num_steps = 1320
    config.train.eval_every = 330
    config.train.checkpoint_every = 1320
    config.optimizer.warmup_steps = 66
    return config
