"""Fine-tuning onto a dataset with another class count: everything but the classifiers is loaded,
the classifiers keep their fresh initialisation at the new shape, and the log names them."""
from __future__ import annotations

import pathlib

import jax
import numpy as np
import pytest
from flax import traverse_util

from bisenet_jax import checkpoints, convert
from bisenet_jax.models import create_model, init_variables
from bisenet_jax.train import loop
from bisenet_jax.train.config import config_from_file
from bisenet_jax.train.initialise import initial_state
from bisenet_jax.train.setup import create_train_setup

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"
SOURCE_CLASSES = 7  # the tiny config trains 5 demo classes


def tiny_config(init_checkpoint: str):
    config = config_from_file(CONFIGS / "tiny.py")
    config.train.eval_every = -1
    config.train.num_prediction_images = 0
    config.train.async_checkpointing = False
    config.train.num_steps = 3
    config.train.init_checkpoint = init_checkpoint
    return config


@pytest.fixture(scope="module")
def source_variables():
    model = create_model("bisenetv2", SOURCE_CLASSES)
    variables = init_variables(model, 42)
    return jax.tree_util.tree_map(np.asarray, variables)


@pytest.fixture(params=["jax model directory", "pytorch .pth"])
def source_path(request, source_variables, tmp_path):
    if request.param == "jax model directory":
        return str(checkpoints.save_model(tmp_path / "src", source_variables, model_name="bisenetv2",
                                          num_classes=SOURCE_CLASSES))
    pytest.importorskip("torch")
    path = tmp_path / "src.pth"
    convert.save_torch_checkpoint(convert.to_torch_state_dict(source_variables, "bisenetv2"), path)
    return str(path)


def test_initialisation_loads_all_but_the_classifiers(source_path, source_variables, tmp_path, capsys):
    config = tiny_config(source_path)
    setup = create_train_setup(config, ignore_label=255)
    fresh = jax.device_get({"params": setup.state.params, "batch_stats": setup.state.batch_stats})
    with checkpoints.create_manager(tmp_path / "empty_workdir", async_save=False) as manager:
        state, _ = initial_state(config, setup, manager, None)
    loaded = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    flat_loaded = traverse_util.flatten_dict(loaded, sep="/")
    flat_source = traverse_util.flatten_dict(source_variables, sep="/")
    flat_fresh = traverse_util.flatten_dict(fresh, sep="/")
    reinitialised = sorted(k for k, v in flat_loaded.items() if v.shape != flat_source[k].shape)
    assert reinitialised, "the classifier layers must have the new class count"
    for key in reinitialised:  # only classifier outputs change shape, to 5 classes, keeping the fresh init
        assert flat_loaded[key].shape[-1] == 5 and flat_source[key].shape[-1] == SOURCE_CLASSES
        np.testing.assert_array_equal(flat_loaded[key], flat_fresh[key])
    for key, value in flat_loaded.items():
        if key not in reinitialised:
            np.testing.assert_array_equal(value, flat_source[key])
    out = capsys.readouterr().out
    assert f"{len(reinitialised)} classifier parameters re-initialised for 5 classes (the source has 7)" in out
    for key in reinitialised:
        assert key in out


def test_finetuning_run_trains_from_the_source(source_path, tmp_path):
    result = loop.train_and_evaluate(tiny_config(source_path), tmp_path / "run")
    assert result["step"] == 3 and result["stop_reason"] == "done"


def test_a_source_of_another_model_is_refused(tmp_path):
    model = create_model("bisenetv1_x39", SOURCE_CLASSES)
    variables = init_variables(model, 0)
    path = checkpoints.save_model(tmp_path / "x39", variables, model_name="bisenetv1_x39", num_classes=SOURCE_CLASSES)
    config = tiny_config(str(path))
    with pytest.raises(checkpoints.CheckpointMismatchError, match="model_name: checkpoint has 'bisenetv1_x39'"):
        loop.train_and_evaluate(config, tmp_path / "run")
