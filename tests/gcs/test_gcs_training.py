"""Training with a ``gs://`` workdir (the CLI in subprocesses, against the emulator): killed between
checkpoints or during an asynchronous save, the next start resumes from the last complete step and
ends with the parameters of an uninterrupted run; evaluate and predict read the workdir and write
to the bucket."""
from __future__ import annotations

import json
import pathlib
import signal

import jax
import numpy as np
import pytest
from PIL import Image

from bisenet_jax import checkpoints, paths
from bisenet_jax.data import DemoSource, get_dataset_info
from bisenet_jax.data.decode import read_image, read_label

HERE = pathlib.Path(__file__).parent
TINY = HERE.parents[1] / "configs" / "tiny.py"
# 6 steps, a checkpoint every 2 (2, 4, 6), the loss of every step in metrics.jsonl.
TRAIN_FLAGS = ["--config", str(TINY), "--config.train.eval_every=-1", "--config.train.num_prediction_images=0",
               "--config.train.num_steps=6", "--config.train.checkpoint_every=2", "--config.train.log_every=1"]


def train(emulator, workdir: str, fault: str = "none", step: int = 0, *flags: str):
    return emulator.run([HERE / "gcs_run.py", fault, step, *TRAIN_FLAGS, f"--workdir={workdir}", *flags])


def committed_steps(workdir: str) -> list[int]:
    with checkpoints.create_manager(f"{workdir}/checkpoints", read_only=True) as manager:
        return sorted(manager.all_steps())


def assert_same_parameters(workdir: str, reference: str) -> None:
    (resumed, info), (expected, _) = checkpoints.load_model(workdir), checkpoints.load_model(reference)
    assert info["step"] == 6
    for a, b in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def losses(workdir: str) -> dict[int, float]:
    lines = paths.path(f"{workdir}/metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["train/loss"] for r in map(json.loads, lines) if "train/loss" in r}


@pytest.fixture(scope="module")
def uninterrupted(gcs_emulator):
    workdir = gcs_emulator.create_bucket("bisenet-train") + "/uninterrupted"
    out = train(gcs_emulator, workdir)
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


def test_the_workdir_holds_config_checkpoints_metrics_and_tensorboard_events(gcs, uninterrupted):
    root = paths.path(uninterrupted)
    assert json.loads((root / "config.json").read_text())["train"]["num_steps"] == 6
    assert committed_steps(uninterrupted) == [2, 4, 6]
    assert sorted(losses(uninterrupted)) == [1, 2, 3, 4, 5, 6]
    assert [p.name.startswith("events.out.tfevents") for p in (root / "tensorboard").iterdir()] == [True]


def test_a_run_killed_between_checkpoints_resumes_from_the_last_one_and_ends_as_if_uninterrupted(gcs, uninterrupted):
    workdir = uninterrupted.replace("/uninterrupted", "/killed_between")
    killed = train(gcs, workdir, "kill_before_step", 5, "--config.train.async_checkpointing=False")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert committed_steps(workdir) == [2, 4]

    resumed = train(gcs, workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {workdir}/checkpoints/4 (step 4)" in resumed.stdout
    assert_same_parameters(workdir, uninterrupted)
    assert {s: v for s, v in losses(workdir).items() if s > 4} == {5: losses(uninterrupted)[5],
                                                                   6: losses(uninterrupted)[6]}


def test_a_kill_during_an_async_save_leaves_an_uncommitted_step_that_the_next_start_skips_and_replaces(
        gcs, uninterrupted):
    workdir = uninterrupted.replace("/uninterrupted", "/killed_saving")
    killed = train(gcs, workdir, "kill_during_save", 4)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    step_4 = paths.path(f"{workdir}/checkpoints/4")
    assert (step_4 / "state" / "_METADATA").exists()  # the arrays are in the bucket...
    assert not (step_4 / "commit_success.txt").exists()  # ...but the step was never committed
    assert committed_steps(workdir) == [2]

    resumed = train(gcs, workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {workdir}/checkpoints/2 (step 2)" in resumed.stdout
    assert (step_4 / "commit_success.txt").exists()  # saved again, over the remains of the killed save
    assert committed_steps(workdir) == [2, 4, 6]
    assert_same_parameters(workdir, uninterrupted)
    _, info = checkpoints.load_model(workdir, step=4)
    assert info["step"] == 4


def test_evaluate_and_predict_read_a_gs_workdir_and_write_to_the_bucket(gcs, uninterrupted):
    bucket = uninterrupted.rsplit("/", 1)[0]
    evaluated = gcs.run(["scripts/evaluate.py", "--config", TINY, "--checkpoint", uninterrupted,
                         "--output", f"{bucket}/eval/tiny.json", "--noprogress"])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = json.loads(paths.path(f"{bucket}/eval/tiny.json").read_text())
    assert (results["checkpoint"], results["step"], results["num_images"]) == (uninterrupted, 6, 8)
    assert np.sum(results["confusion_matrix"]) == 8 * 64 * 96  # every pixel of the 8 demo val images

    source = DemoSource("val", num_examples=2, image_size=(64, 96))
    for i in range(2):
        with paths.path(f"{bucket}/inputs/scene_{i}.png").open("wb") as file:
            Image.fromarray(source[i]["image"]).save(file, format="PNG")
    predicted = gcs.run(["scripts/predict.py", "--checkpoint", uninterrupted, "--input", f"{bucket}/inputs",
                         "--output", f"{bucket}/predictions", "--outputs=labels,colors"])
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    palette = np.asarray(get_dataset_info("demo").palette)
    for i in range(2):
        labels = read_label(f"{bucket}/predictions/labels/scene_{i}.png")
        colors = read_image(f"{bucket}/predictions/colors/scene_{i}.png")
        assert labels.shape == (64, 96) and labels.max() < 5
        np.testing.assert_array_equal(colors, palette[labels])
