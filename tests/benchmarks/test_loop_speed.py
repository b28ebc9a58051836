"""The loop-vs-step benchmark measures what it says: the config's own step, pipeline and loop."""
from __future__ import annotations

import pathlib

import numpy as np

from bisenet_jax.benchmarks import loop_speed
from bisenet_jax.train.config import config_from_file

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def _tiny_config():
    config = config_from_file(CONFIGS / "tiny.py")
    config.model.name = "bisenetv1_r18"  # V2 compiles slowest; any model shows the protocol
    config.data.crop_size = (64, 64)
    config.train.batch_size = 2
    return config


def test_compare_reports_the_three_rates_of_the_configs_own_step():
    config = _tiny_config()
    result = loop_speed.compare(config, warmup=1, steps=4)
    assert result["model"] == "bisenetv1_r18" and result["batch_size"] == 2 and result["crop"] == [64, 64]
    for part in ("step", "data", "loop"):
        assert np.isfinite(result[part]["images_per_second"]) and result[part]["images_per_second"] > 0
    # The loop ran warmup + steps + 1 steps, logging every 2: windows end at steps 2, 4 and 6.
    assert [step for step, _ in result["loop"]["windows"]] == [2, 4, 6]
    assert result["loop_over_step"] == result["loop"]["images_per_second"] / result["step"]["images_per_second"]
    assert result["data"]["cpu_seconds_per_batch"] > 0
    # The caller's config is not changed by the loop run.
    assert config.train.num_steps == _tiny_config().train.num_steps
