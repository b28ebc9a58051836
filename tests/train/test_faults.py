"""Nothing lost under faults: every step named is on disk, damaged steps are skipped (or refused),
refused runs leave the workdir as they found it, and bad configs fail before any compilation."""
from __future__ import annotations

import hashlib
import pathlib
import re

import jax
import numpy as np
import pytest
from PIL import Image

from bisenet_jax import checkpoints
from bisenet_jax.train import loop
from bisenet_jax.train.config import config_from_file

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def tiny_config(**train):
    config = config_from_file(CONFIGS / "tiny.py")
    config.train.eval_every = -1
    config.train.num_prediction_images = 0
    for key, value in train.items():
        setattr(config.train, key, value)
    return config


def _steps(workdir) -> list[int]:
    with checkpoints.create_manager(pathlib.Path(workdir) / "checkpoints", read_only=True) as manager:
        return sorted(manager.all_steps())


def _snapshot(folder: pathlib.Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 5-step run, saving every 2 steps (2, 4) and, always, the last step (5)."""
    workdir = tmp_path_factory.mktemp("finished")
    result = loop.train_and_evaluate(tiny_config(num_steps=5, checkpoint_every=2, async_checkpointing=False), workdir)
    assert result["step"] == 5
    return workdir


def test_the_final_step_is_saved_when_num_steps_is_not_a_multiple_of_checkpoint_every(finished):
    assert _steps(finished) == [2, 4, 5]
    _, info = checkpoints.load_model(finished)
    assert info["step"] == 5


def test_nonfinite_stop_with_async_saves_names_a_step_that_loads(tmp_path, monkeypatch):
    real = loop.data_lib.make_global_batch
    calls = {"n": 0}

    def poisoned(batch, sharding):
        calls["n"] += 1
        if calls["n"] == 5:
            batch = dict(batch, image=np.full_like(batch["image"], np.nan))
        return real(batch, sharding)

    monkeypatch.setattr(loop.data_lib, "make_global_batch", poisoned)
    config = tiny_config(log_every=1, checkpoint_every=4, async_checkpointing=True)
    with pytest.raises(loop.NonFiniteLossError, match=r"at step 5 .*last good checkpoint is step 4") as error:
        loop.train_and_evaluate(config, tmp_path)
    # The message names what was non-finite. On CPU a max inside the train step's YNNPACK reductions
    # (bisenet_jax/xla_flags.py) ignores NaN, so a NaN image may give a finite loss; its gradient norm is NaN.
    assert re.search(r"(loss|grad_norm) nan", str(error.value)), str(error.value)
    variables, info = checkpoints.load_model(tmp_path)  # the named step is complete on disk
    assert info["step"] == 4
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(variables))


def test_a_missing_eval_split_fails_before_the_first_step_and_leaves_no_workdir(tmp_path):
    root = tmp_path / "CamVid"
    for i in range(2):
        Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(_mkdir(root / "train") / f"a{i}.png")
        Image.fromarray(np.zeros((40, 48), np.uint8)).save(_mkdir(root / "trainannot") / f"a{i}.png")
    config = tiny_config(eval_every=0)
    config.data.name, config.data.root, config.model.num_classes = "camvid", str(root), 11
    config.data.camvid.use_list_file = False
    workdir = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="val"):
        loop.train_and_evaluate(config, workdir)
    assert not workdir.exists()


def test_a_refused_resume_leaves_the_workdir_byte_identical(finished):
    before = _snapshot(finished)
    config = tiny_config()
    config.model.name = "bisenetv1_x39"
    with pytest.raises(checkpoints.CheckpointMismatchError, match="model_name: checkpoint has 'bisenetv2'"):
        loop.train_and_evaluate(config, finished)
    assert _snapshot(finished) == before


def test_a_bad_cache_size_is_refused_before_the_workdir_is_touched(tmp_path):
    config = tiny_config()
    config.data.cache_gb = -1.0
    with pytest.raises(ValueError, match=r"config\.data\.cache_gb=-1\.0: expected a finite number of GiB >= 0"):
        loop.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_crop_below_the_model_minimum_names_data_crop_size(tmp_path):
    config = tiny_config()
    config.data.crop_size = (16, 64)
    with pytest.raises(ValueError, match=r"data\.crop_size=\(16, 64\)"):
        loop.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _copy_run(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


def _truncate_largest_array_file(step_dir: pathlib.Path) -> pathlib.Path:
    """Simulates a damaged disk: the largest file of the step's state item loses half its bytes."""
    victim = max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = victim.read_bytes()
    victim.write_bytes(data[:len(data) // 2])
    return victim


def _damaged_copy(finished, tmp_path, damage: str) -> tuple[pathlib.Path, pathlib.Path]:
    """A copy of the finished run whose newest step (5) has a truncated array file or no 'meta' item."""
    import shutil
    workdir = _copy_run(finished, tmp_path / "run")
    step_dir = workdir / "checkpoints" / "5"
    if damage == "truncated array file":
        _truncate_largest_array_file(step_dir)
    else:
        shutil.rmtree(step_dir / "meta")
    return workdir, step_dir


@pytest.mark.parametrize("damage", ["truncated array file", "missing item"])
def test_a_damaged_latest_step_is_skipped_with_a_warning_and_left_in_place(finished, tmp_path, capsys, damage):
    workdir, step_dir = _damaged_copy(finished, tmp_path, damage)
    result = loop.train_and_evaluate(tiny_config(num_steps=6, checkpoint_every=2, async_checkpointing=False), workdir)
    out = capsys.readouterr().out
    assert "checkpoint step 5" in out and "cannot be restored" in out
    assert "resumed from" in out and "/4 (step 4)" in out
    assert result["step"] == 6
    assert step_dir.is_dir()  # never deleted


@pytest.mark.parametrize("damage", ["truncated array file", "missing item"])
def test_strict_resume_refuses_a_damaged_latest_step_naming_it(finished, tmp_path, damage):
    workdir, step_dir = _damaged_copy(finished, tmp_path, damage)
    before = _snapshot(workdir)
    with pytest.raises(checkpoints.CheckpointError, match=r"step 5 in .*checkpoints"):
        loop.train_and_evaluate(tiny_config(num_steps=6, checkpoint_every=2, async_checkpointing=False,
                                            strict_resume=True), workdir)
    if damage == "missing item":  # refused during validation: nothing written
        assert _snapshot(workdir) == before


def test_two_runs_with_the_same_seed_give_bit_identical_parameters(finished, tmp_path):
    loop.train_and_evaluate(tiny_config(num_steps=5, checkpoint_every=2, async_checkpointing=False), tmp_path)
    first, _ = checkpoints.load_model(finished)
    second, _ = checkpoints.load_model(tmp_path)
    for a, b in zip(jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(second)):
        np.testing.assert_array_equal(a, b)


def _mkdir(path: pathlib.Path) -> pathlib.Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.slow  # a training run in a subprocess on a small filesystem: about a minute
def test_a_full_disk_during_an_async_save_ends_with_one_message_and_the_previous_step_intact(tmp_path):
    import os
    import subprocess
    import sys

    script = pathlib.Path(__file__).with_name("disk_full_run.py")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("BISENET_VERBOSE", None)
    out = subprocess.run([sys.executable, str(script), str(CONFIGS / "tiny.py"), str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 1
    # The message ends the output (the I/O threads' own reports come before it and may share its line).
    tail = "\n".join(out.stderr.strip().splitlines()[-3:])
    assert (f"error: saving a checkpoint to {tmp_path / 'run' / 'checkpoints'} failed: the file system is full "
            "or over its quota (File too large); a step needs about ") in tail, tail
    assert "the last complete step, 2, is intact" in tail
    assert _steps(tmp_path / "run") == [2]
    _, info = checkpoints.load_model(tmp_path / "run")
    assert info["step"] == 2
