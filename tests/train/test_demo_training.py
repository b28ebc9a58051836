"""The README's main job at a smaller scale: on the demo data the loss falls and val mIoU rises."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from bisenet_jax.train import loop
from bisenet_jax.train.config import config_from_file

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.slow  # a real training run of the demo recipe: about a minute
def test_demo_training_learns(tmp_path):
    # 40 steps: in the 80-step version of this test (sessions up to 26) val mIoU was 0.79-0.80 at step 40
    # and 0.88 at step 80, the loss 3.5 at step 10 and 1.4 at step 40.
    config = config_from_file(CONFIGS / "demo.py")
    config.train.num_steps = 40
    config.train.eval_every = 20
    config.train.checkpoint_every = 20
    config.train.log_every = 5
    config.train.num_prediction_images = 1
    config.train.progress_bar = False
    config.optimizer.warmup_steps = 10
    config.data.demo.num_val = 40
    result = loop.train_and_evaluate(config, tmp_path)

    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [l["train/loss"] for l in lines if "train/loss" in l]
    mious = {l["step"]: l["val/miou"] for l in lines if "val/miou" in l}
    assert np.mean(losses[-2:]) < 0.6 * np.mean(losses[:2]), losses
    assert sorted(mious) == [20, 40]
    assert mious[40] > mious[20], mious
    assert mious[40] > 0.5, mious
    assert result["miou"] == mious[40]
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == ["step_0000020", "step_0000040"]
    assert any((tmp_path / "tensorboard").iterdir())
