"""The training loop: exact resume after preemption, non-finite losses, mismatching checkpoints."""
from __future__ import annotations

import json
import os
import pathlib
import signal

import jax
import numpy as np
import pytest

from bisenet_jax.checkpoints import load_model
from bisenet_jax.train import loop
from bisenet_jax.checkpoints import CheckpointMismatchError
from bisenet_jax.train.config import config_from_file

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def tiny_config(**train):
    config = config_from_file(CONFIGS / "tiny.py")
    config.train.eval_every = -1  # these tests are about the loop, not about evaluation
    config.train.num_prediction_images = 0
    config.train.async_checkpointing = False
    for key, value in train.items():
        setattr(config.train, key, value)
    return config


def _losses(workdir):
    lines = [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return {l["step"]: l["train/loss"] for l in lines if "train/loss" in l}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = loop.train_and_evaluate(tiny_config(log_every=1), workdir)
    assert result["step"] == 6 and result["stop_reason"] == "done"
    return workdir


def test_resume_after_preemption_is_exact(uninterrupted, tmp_path, monkeypatch):
    calls = {"n": 0}

    def preempt_at_step_3(self):
        calls["n"] += 1
        return calls["n"] == 3

    with monkeypatch.context() as m:
        m.setattr(loop._Preemption, "any_process_requested", preempt_at_step_3)
        first = loop.train_and_evaluate(tiny_config(log_every=1), tmp_path)
    assert first["step"] == 3 and "preempted" in first["stop_reason"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["3"]

    second = loop.train_and_evaluate(tiny_config(log_every=1), tmp_path)  # the same command resumes
    assert second["step"] == 6
    expected, _ = load_model(uninterrupted)
    resumed, info = load_model(tmp_path)
    assert info["step"] == 6
    for a, b in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    # The resumed run saw exactly the batches of the uninterrupted one.
    assert _losses(tmp_path) == _losses(uninterrupted)


def test_sigterm_sets_the_preemption_flag():
    with loop._Preemption() as preemption:
        assert not preemption.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.requested
    assert signal.getsignal(signal.SIGTERM) is not preemption._handle


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = loop.data_lib.make_global_batch
    calls = {"n": 0}

    def poisoned(batch, sharding):
        calls["n"] += 1
        if calls["n"] == 5:
            batch = dict(batch, image=np.full_like(batch["image"], np.nan))
        return real(batch, sharding)

    monkeypatch.setattr(loop.data_lib, "make_global_batch", poisoned)
    with pytest.raises(loop.NonFiniteLossError, match=r"at step 5.*last good checkpoint is step 3"):
        loop.train_and_evaluate(tiny_config(log_every=2), tmp_path)
    steps = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == ["3"]
    variables, _ = load_model(tmp_path)
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(variables))


def test_checkpoint_of_another_model_is_refused(uninterrupted):
    config = tiny_config()
    config.model.name = "bisenetv1_x39"
    with pytest.raises(CheckpointMismatchError, match="model_name: checkpoint has 'bisenetv2', config has 'bisenetv1_x39'"):
        loop.train_and_evaluate(config, uninterrupted)


def test_class_count_must_match_the_dataset(tmp_path):
    config = tiny_config()
    config.model.num_classes = 6
    with pytest.raises(ValueError, match="dataset 'demo' has 5 classes"):
        loop.train_and_evaluate(config, tmp_path)
