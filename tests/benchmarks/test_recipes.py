"""The CamVid CPU recipes: one definition, which the configs return and the benchmark trains."""
from __future__ import annotations

import pathlib

import pytest

from bisenet_jax.benchmarks import camvid
from bisenet_jax.benchmarks.recipes import CAMVID_CPU_MODELS, camvid_cpu_recipe
from bisenet_jax.train.config import config_from_file

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("model", sorted(CAMVID_CPU_MODELS))
def test_each_cpu_config_file_is_the_recipe_the_benchmark_trains(model, tiny_camvid):
    config_file = CONFIGS / f"camvid_{CAMVID_CPU_MODELS[model]}_cpu.py"
    assert config_from_file(config_file).to_dict() == camvid_cpu_recipe(model).to_dict()
    benchmarked = camvid.load_config(model, tiny_camvid)
    assert benchmarked.data.root == str(tiny_camvid)
    benchmarked.data.root = ""
    assert benchmarked.to_dict() == camvid_cpu_recipe(model).to_dict()


@pytest.mark.parametrize("model, network, lr, crop, num_steps", [
    ("v1_r18", "bisenetv1_r18", 2e-2, (256, 320), 800),
    ("v1_x39", "bisenetv1_x39", 2.5e-2, (256, 320), 1320),
    ("v2", "bisenetv2", 5e-2, (192, 256), 840),
])
def test_recipes_keep_a_5_percent_warmup_and_a_4_point_learning_curve(model, network, lr, crop, num_steps):
    config = camvid_cpu_recipe(model, root="/data/camvid")
    assert (config.model.name, config.optimizer.lr, tuple(config.data.crop_size)) == (network, lr, crop)
    assert (config.data.name, config.data.root, config.model.num_classes) == ("camvid", "/data/camvid", 11)
    assert config.train.num_steps == config.optimizer.total_steps == num_steps
    assert config.optimizer.warmup_steps * 20 == config.train.eval_every * 4 == num_steps
    assert config.train.checkpoint_every == num_steps
    assert config.train.time_budget_minutes == 30.0 and config.train.batch_size == 8


def test_only_v2_trains_every_parameter_at_one_rate():
    multipliers = {model: camvid_cpu_recipe(model).optimizer.head_lr_multiplier for model in CAMVID_CPU_MODELS}
    assert multipliers == {"v1_r18": 10.0, "v1_x39": 10.0, "v2": 1.0}


def test_an_unknown_recipe_and_a_missing_camvid_are_refused(tmp_path):
    with pytest.raises(ValueError, match="v1_r18, v1_x39, v2"):
        camvid_cpu_recipe("v1_r101")
    with pytest.raises(FileNotFoundError, match="BISENET_CAMVID_ROOT"):
        camvid.load_config("v1_r18", tmp_path)
