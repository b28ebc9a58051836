"""The training loop: exact resume after preemption, non-finite losses, mismatching checkpoints."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import signal

import jax
import numpy as np
import pytest

from bisenet_jax import checkpoints
from bisenet_jax.checkpoints import load_model
from bisenet_jax.train import loop, optim
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


def _preempt_at_step(step: int):
    """A stand-in for ``_Preemption.any_process_requested`` that reports a SIGTERM at ``step`` of this start."""
    calls = {"n": 0}

    def requested(self):
        calls["n"] += 1
        return calls["n"] == step

    return requested


def test_resume_after_preemption_is_exact(uninterrupted, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(loop._Preemption, "any_process_requested", _preempt_at_step(3))
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


def _on_the_time_clock(monkeypatch, num_steps: int, budget_minutes: float = 1.0, startup_seconds: float = 0.0):
    """The tiny config on the time clock (the schedule spanning 6 steps' worth of budget, ``num_steps``
    a cap), with a fake wall clock that compiling the step advances by ``startup_seconds`` and each
    train step by (budget - startup) / 6: the schedule's position at step k is then exactly k (the
    schedule spans the budget less the start-up), and the budget is spent after the sixth step."""
    config = tiny_config(log_every=1).copy_and_resolve_references()
    config.train.num_steps = num_steps
    config.train.time_budget_minutes = budget_minutes
    config.optimizer.total_steps = 6
    config.optimizer.schedule_clock = "time"
    fake = {"now": 1000.0}
    real_setup = loop.create_train_setup
    per_step = (60.0 * budget_minutes - startup_seconds) / 6

    def advancing_setup(*args, **kwargs):
        setup = real_setup(*args, **kwargs)

        class Lowered:
            def __init__(self, lowered):
                self.lowered = lowered

            def compile(self):
                compiled = self.lowered.compile()
                fake["now"] += startup_seconds

                def run(*step_args):
                    fake["now"] += per_step
                    return compiled(*step_args)
                return run

        class Step:  # the loop compiles the step ahead on the time clock and runs the compiled program
            def __call__(self, *step_args):
                raise AssertionError("on the time clock the loop runs the step compiled ahead")

            def lower(self, *step_args):
                return Lowered(setup.train_step.lower(*step_args))

        return dataclasses.replace(setup, train_step=Step())

    monkeypatch.setattr(loop, "create_train_setup", advancing_setup)
    monkeypatch.setattr(loop, "BudgetClock", functools.partial(optim.BudgetClock, now=lambda: fake["now"]))
    return config


def _records(workdir, key):
    lines = [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return {l["step"]: l[key] for l in lines if key in l}


def test_time_clock_at_position_k_trains_as_the_step_clock_and_resumes_exactly(uninterrupted, tmp_path, monkeypatch):
    """Positions 0..5 on the time clock are the step clock's steps 0..5: the same rates, losses and
    weights, also when the run is preempted at step 3 and resumed (the budget spent is carried)."""
    config = _on_the_time_clock(monkeypatch, num_steps=6)
    with monkeypatch.context() as m:
        m.setattr(loop._Preemption, "any_process_requested", _preempt_at_step(3))
        first = loop.train_and_evaluate(config, tmp_path)
    assert first["step"] == 3 and "preempted" in first["stop_reason"]
    second = loop.train_and_evaluate(config, tmp_path)
    assert second["step"] == 6 and second["stop_reason"] == "done"
    lrs, expected_lrs = _records(tmp_path, "train/lr"), _records(uninterrupted, "train/lr")
    np.testing.assert_allclose([lrs[s] for s in range(1, 7)], [expected_lrs[s] for s in range(1, 7)], rtol=1e-6)
    np.testing.assert_allclose([_losses(tmp_path)[s] for s in range(1, 7)],
                               [_losses(uninterrupted)[s] for s in range(1, 7)], rtol=1e-5)
    expected, _ = load_model(uninterrupted)
    trained, _ = load_model(tmp_path)
    for a, b in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(trained)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_time_clock_runs_until_the_budget_with_the_rate_decayed_to_zero(tmp_path, monkeypatch):
    config = _on_the_time_clock(monkeypatch, num_steps=100)  # the cap is far: the budget ends the run
    result = loop.train_and_evaluate(config, tmp_path)
    assert result["step"] == 7 and "time budget" in result["stop_reason"]
    lrs = _records(tmp_path, "train/lr")
    schedule = optim.warmup_poly_schedule(config.optimizer.lr, 6, config.optimizer.warmup_steps)
    np.testing.assert_allclose([lrs[s] for s in range(1, 8)], [float(schedule(k)) for k in range(7)], rtol=1e-6)
    assert lrs[6] > 0.0 and lrs[7] == 0.0  # the step past the budget runs at the schedule's end


def test_time_clock_schedule_starts_after_the_compilation_which_the_budget_counts(tmp_path, monkeypatch):
    """A start-up (compiling the step) of a quarter of the budget: the steps train at positions 0..6
    of the schedule as without one (its warmup is not spent while compiling), the budget (start-up
    included) ends the run at the same step, and the checkpoint keeps the start-up for a resume."""
    config = _on_the_time_clock(monkeypatch, num_steps=100, startup_seconds=15.0)
    result = loop.train_and_evaluate(config, tmp_path)
    assert result["step"] == 7 and "time budget" in result["stop_reason"]
    lrs = _records(tmp_path, "train/lr")
    schedule = optim.warmup_poly_schedule(config.optimizer.lr, 6, config.optimizer.warmup_steps)
    np.testing.assert_allclose([lrs[s] for s in range(1, 8)], [float(schedule(k)) for k in range(7)], rtol=1e-6)
    with checkpoints.create_manager(tmp_path / "checkpoints", read_only=True) as manager:
        meta = checkpoints.read_meta(manager, 7)
        resumed_from = loop._schedule_seconds(manager, 7)  # what a resume at step 7 starts its clock with
    assert meta["startup_seconds"] == pytest.approx(15.0) and meta["schedule_seconds"] == pytest.approx(67.5)
    assert resumed_from == pytest.approx((67.5, 15.0))


def test_time_clock_without_a_budget_is_refused_before_any_work(tmp_path):
    config = tiny_config()
    config.optimizer.schedule_clock = "time"
    with pytest.raises(ValueError, match="time_budget_minutes"):
        loop.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


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
