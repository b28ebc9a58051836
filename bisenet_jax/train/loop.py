"""``train_and_evaluate``: the training loop, importable from a notebook (``main.py`` only parses flags).

Order (as in big_vision): validate everything the run will read (splits, class count, crop, the
workdir's checkpoints) before writing anything or compiling -> the training setup (mesh, model,
state on its shardings, compiled step: ``train/setup.py``) -> data iterator -> initial weights
(``train/initialise.py``: resume, init checkpoint, backbone, scratch) -> the loop. Starting the
same command on an existing workdir resumes exactly: the state and the grain iterator state are
restored together. Whatever ends the loop (the last step, SIGTERM, the time budget, a non-finite
step, an exception), pending checkpoint saves are waited for and the manager is closed, so a step
named in a message is a step on disk.
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from bisenet_jax import checkpoints
from bisenet_jax import data as data_lib
from bisenet_jax import allocator, paths, xla_flags
from bisenet_jax.evaluation import evaluator
from bisenet_jax.evaluation.predict import Predictor, colorize
from bisenet_jax.models import MIN_INPUT_SIZE
from bisenet_jax.train import monitoring
from bisenet_jax.train.initialise import initial_state
from bisenet_jax.train.optim import BudgetClock, schedule_clock
from bisenet_jax.train.setup import TrainSetup, create_train_setup
from bisenet_jax.train.state import count_params


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradient became NaN or infinite; the message names the step and the last saved step."""


class _Preemption:
    """Turns SIGTERM into a flag checked between steps: the loop saves and exits cleanly."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. some notebook runners): no handler
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def any_process_requested(self) -> bool:
        if jax.process_count() == 1:
            return self.requested
        return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Train ``config`` in ``workdir``, a folder or a ``gs://`` URL (resuming if it holds a checkpoint);
    returns the final metrics."""
    workdir = paths.path(workdir, absolute=True)  # first: a bad bucket fails before any other work
    info = validate(config, workdir)
    _write_config(config, workdir)

    setup = create_train_setup(config, ignore_label=info.ignore_label)
    data_iter = data_lib.create_train_iterator(config.data, config.train.batch_size, seed=config.train.seed)
    manager = checkpoints.create_manager(workdir / checkpoints.CHECKPOINTS_DIR, keep=config.train.keep_checkpoints,
                                         async_save=config.train.async_checkpointing)
    try:
        state, data_iter = initial_state(config, setup, manager, data_iter, log=_log)
        return _train(config, workdir, setup, state, data_iter, manager, info)
    finally:  # on any exit: pending saves finish (or fail with one clear error), then the manager closes
        try:
            checkpoints.wait_for_saves(manager, needed_bytes=checkpoints.state_nbytes(setup.state))
        finally:
            with contextlib.suppress(Exception):  # already reported above if saving failed
                manager.close()


def validate(config, workdir: paths.Path):
    """Everything that can be checked before spending time or touching the workdir; returns the dataset info.

    Reading each split's index checks its folders and list files; the workdir's newest readable
    checkpoint must hold the configured model and class count.
    """
    schedule_clock(config)  # a time clock without a budget
    info = data_lib.create_source(config.data, config.data.train_split).info
    if config.model.num_classes != info.num_classes:
        raise ValueError(
            f"config.model.num_classes={config.model.num_classes} but dataset {info.name!r} has "
            f"{info.num_classes} classes (ignore label {info.ignore_label} is not a class); set "
            f"--config.model.num_classes={info.num_classes}")
    crop = tuple(int(c) for c in config.data.crop_size)
    if len(crop) != 2 or min(crop) < MIN_INPUT_SIZE:
        raise ValueError(f"data.crop_size={crop}: the models need a (height, width) of at least {MIN_INPUT_SIZE} "
                         f"pixels a side; set --config.data.crop_size=\"({max(crop[0], MIN_INPUT_SIZE)},"
                         f"{max(crop[-1], MIN_INPUT_SIZE)})\"")
    data_lib.cache_bytes(config.data)  # data.cache_gb
    if config.train.eval_every >= 0:
        data_lib.create_source(config.data, config.data.eval_split)
    ckpt_dir = workdir / checkpoints.CHECKPOINTS_DIR
    if ckpt_dir.is_dir():
        with checkpoints.create_manager(ckpt_dir, read_only=True) as manager:
            checkpoints.check_first_restorable(manager, _meta(config, info), strict=config.train.strict_resume)
    return info


def _meta(config, info) -> dict[str, Any]:
    return {"model_name": config.model.name, "num_classes": config.model.num_classes, "dataset": info.name,
            "ignore_label": info.ignore_label, "class_names": list(info.class_names)}


def _write_config(config, workdir: paths.Path) -> None:
    """``config.json`` is the latest start's config; every start also keeps its own ``config.<time>.json``."""
    if jax.process_index() != 0:
        return
    workdir.mkdir(parents=True, exist_ok=True)
    text = config.to_json_best_effort(indent=2)
    (workdir / "configs").mkdir(exist_ok=True)
    (workdir / "configs" / f"config.{time.strftime('%Y%m%d-%H%M%S')}.{time.time_ns() % 10**9:09d}.json").write_text(text)
    (workdir / "config.json").write_text(text)


def _train(config, workdir: paths.Path, setup: TrainSetup, state, data_iter, manager, info) -> dict[str, Any]:
    global_batch = config.train.batch_size
    crop_h, crop_w = config.data.crop_size
    writer = monitoring.MetricWriter(workdir)
    meta = _meta(config, info)
    start_step, num_steps = int(state.step), int(config.train.num_steps)
    _log(f"{config.model.name}: {count_params(state.params):,} parameters; {setup.mesh.size} device(s), "
         f"{jax.process_count()} process(es); global batch {global_batch}, crop {crop_h}x{crop_w}; "
         f"steps {start_step} -> {num_steps}; workdir {workdir}")
    _log(xla_flags.describe(setup.step_options, init=setup.init_options,
                            inference=xla_flags.inference_options()))
    _log(allocator.describe())

    pending: list[tuple[int, dict]] = []  # metrics of steps not yet fetched from the devices
    budget_s = 60.0 * config.train.time_budget_minutes
    t_start = t_log = time.time()
    clock = None  # on the time clock: the schedule's position, and the budget, across resumes
    if schedule_clock(config) == "time":
        before, startup_before = _schedule_seconds(manager, start_step)
        clock = BudgetClock(budget_s, config.optimizer.total_steps, elapsed_before=before,
                            startup_before=startup_before)
        _log(f"learning-rate schedule on the time clock: warmup and decay span the {config.train.time_budget_minutes}"
             f"-minute budget less the start-ups (compilation) ({before:.0f} s of it spent before this start); "
             f"num_steps={num_steps} is a cap")
    final_metrics: dict[str, Any] = {}
    train_step = setup.train_step
    step, saved_step = start_step, start_step if manager.latest_step() == start_step else None
    stop_reason = "done"
    try:
        with _Preemption() as preemption, monitoring.progress_bar(num_steps, start_step,
                                                                  config.train.progress_bar) as bar:
            while step < num_steps:
                batch = data_lib.make_global_batch(next(data_iter), setup.batch_sharding)
                args = (state, batch)
                if step == start_step and (clock is not None or jax.process_count() > 1):
                    # Compiled before the first step runs: on the time clock the schedule begins after the
                    # compilation (BudgetClock.begin); in several processes every one compiles first.
                    train_step = _compile_ahead(setup.train_step, *args, *(() if clock is None else (np.float32(0),)))
                    if clock is not None:
                        clock.begin()
                if clock is not None:
                    if pending:  # the position is read when the step runs, not while the host runs ahead
                        jax.block_until_ready(pending[-1][1]["loss"])
                    args += (_same_in_every_process(clock.position()),)
                state, metrics = train_step(*args)
                step += 1
                if step == start_step + 1:  # the first step compiles: keep it out of the throughput
                    jax.block_until_ready(metrics)
                    writer.scalars(step, {"compile_seconds": time.time() - t_log}, prefix="train/")
                    t_log = time.time()
                pending.append((step, metrics))
                bar.update(1)
                is_last = step == num_steps
                eval_every = config.train.eval_every  # 0: only at the end; < 0: never
                want_eval = eval_every >= 0 and (is_last or (eval_every > 0 and step % eval_every == 0))
                # The last step is always saved, whatever checkpoint_every is: a finished run loses nothing.
                want_ckpt = want_eval or is_last or step % config.train.checkpoint_every == 0
                preempted = preemption.any_process_requested()
                over_budget = budget_s > 0 and _same_in_every_process(
                    clock.elapsed() if clock is not None else time.time() - t_start) > budget_s
                if step % config.train.log_every == 0 or want_ckpt or preempted or over_budget:
                    timed_steps = sum(1 for s, _ in pending if s > start_step + 1)
                    summary = _flush_metrics(pending, manager)
                    elapsed, t_log = time.time() - t_log, time.time()
                    if timed_steps:
                        summary["images_per_second"] = timed_steps * global_batch / max(elapsed, 1e-9)
                    writer.scalars(step, summary, prefix="train/")
                    bar.set_postfix(loss=f"{summary['loss']:.4f}", img_s=f"{summary.get('images_per_second', 0):.1f}")
                if preempted or over_budget:
                    stop_reason = ("preempted (SIGTERM)" if preempted
                                   else f"time budget of {config.train.time_budget_minutes} min reached")
                    want_eval, want_ckpt = over_budget and config.train.eval_every >= 0, True
                val_miou = None
                if want_eval:
                    final_metrics = evaluate_during_training(config, setup, state, info, writer, step, workdir)
                    val_miou = final_metrics["miou"]
                    bar.write(f"step {step}: val mIoU {val_miou:.4f}")
                if want_ckpt:
                    step_meta = meta if clock is None else {**meta, "schedule_seconds": clock.elapsed(),
                                                            "startup_seconds": clock.startup()}
                    checkpoints.save(manager, step, state, data_iter, step_meta, val_miou=val_miou)
                    saved_step = step
                if want_eval or want_ckpt:
                    t_log = time.time()  # keep evaluation and checkpointing out of the throughput
                if stop_reason != "done":
                    break
    finally:
        writer.close()
    if stop_reason != "done":
        _log(f"stopped at step {step}: {stop_reason}; step {saved_step} saved, run the same command to resume")
    _log(f"checkpoints: {manager.directory}\nTensorBoard: tensorboard --logdir {workdir / 'tensorboard'}\n"
         f"metrics log: {workdir / 'metrics.jsonl'}\npredictions: {workdir / 'predictions'}")
    return {"step": step, "stop_reason": stop_reason, **final_metrics}


def _same_in_every_process(value: float) -> float:
    """Process 0's ``value`` in every process: one clock decides the schedule's position and the stop."""
    if jax.process_count() == 1:
        return value
    return np.float32(np.asarray(multihost_utils.broadcast_one_to_all(np.float32(value))))


def _schedule_seconds(manager, step: int) -> tuple[float, float]:
    """Seconds of the time budget spent before ``step``, and of start-ups among them, from its
    checkpoint (0, 0 for a fresh run; a checkpoint from before start-ups were kept: all training)."""
    if step == 0 or step not in manager.all_steps():
        return 0.0, 0.0
    meta = checkpoints.read_meta(manager, step)
    return float(meta.get("schedule_seconds", 0.0)), float(meta.get("startup_seconds", 0.0))


def _compile_ahead(train_step, *args):
    """``train_step`` compiled for ``args`` before any step runs; the compiled program runs every step
    of this start (the jitted function would trace the step again at its first call). In several
    processes every one compiles before any runs it: CPU collectives (gloo) give a peer 30 s to join
    a program's first collective, and compile times differ between processes (one may find the step
    in its compilation cache)."""
    compiled = train_step.lower(*args).compile()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("bisenet_jax: train step compiled")
    return compiled


def _flush_metrics(pending: list, manager) -> dict[str, float]:
    """Fetch pending step metrics; on the first non-finite step, wait for pending saves and raise naming both."""
    fetched = jax.device_get([m for _, m in pending])
    for (step, _), values in zip(pending, fetched):
        if not bool(values["finite"]):
            pending.clear()
            checkpoints.wait_for_saves(manager)  # a save still in flight must land before we name it
            saved = manager.latest_step()
            where = (f"the last good checkpoint is step {saved} in {manager.directory}" if saved is not None
                     else "no checkpoint had been written yet")
            culprit = ", ".join(f"{k} {float(values[k]):.4g}" for k in ("loss", "grad_norm")
                                if not np.isfinite(values[k])) or "the loss"
            raise NonFiniteLossError(
                f"non-finite values at step {step} ({culprit}; loss {float(values['loss']):.4g}); the update was "
                f"not applied, training stopped and {where}. Check the labels (scripts/check_dataset.py), "
                "lower optimizer.lr or set optimizer.grad_clip_norm.")
    keys = [k for k in fetched[0] if k != "finite"]
    summary = {k: float(np.mean([v[k] for v in fetched])) for k in keys}
    summary["lr"] = float(fetched[-1]["lr"])
    pending.clear()
    return summary


def evaluate_during_training(config, setup: TrainSetup, state, info, writer, step: int,
                             workdir: paths.Path) -> dict[str, Any]:
    """Single-scale validation with the evaluator on the training mesh; logs mIoU, per-class IoU, predictions."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    batches = data_lib.create_eval_dataset(config.data, config.data.eval_split, config.eval.batch_size)
    results = evaluator.evaluate(setup.model, variables, batches, info.num_classes, info.ignore_label,
                                 config.eval.copy_and_resolve_references(), progress=False,
                                 class_names=info.class_names, sharding=setup.batch_sharding)
    writer.scalars(step, {"miou": results["miou"], "pixel_accuracy": results["pixel_accuracy"],
                          **{f"iou/{name}": iou for name, iou in zip(info.class_names, results["iou"])
                             if iou == iou}}, prefix="val/")
    if config.train.num_prediction_images > 0 and jax.process_index() == 0:
        _write_predictions(config, setup.model, variables, info, writer, step, workdir)
    return results


def _write_predictions(config, model, variables, info, writer, step: int, workdir: paths.Path) -> None:
    """image | ground truth | prediction, coloured with the dataset palette, to TensorBoard and PNG."""
    from PIL import Image

    source = data_lib.create_source(config.data, config.data.eval_split)
    predictor = Predictor(model, _replicated_host_copy(variables), info)
    out_dir = workdir / "predictions" / f"step_{step:07d}"
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = []
    for index in range(min(config.train.num_prediction_images, len(source))):
        record = source[index]
        prediction = predictor(record["image"][None])[0]
        panel = np.concatenate([record["image"], colorize(record["label"], info.palette),
                                colorize(prediction, info.palette)], axis=1)
        with (out_dir / f"{index:03d}_{record.get('id', index)}.png").open("wb") as file:  # local or gs://
            Image.fromarray(panel).save(file, format="PNG")
        panels.append(panel)
    writer.images(step, "val/prediction", panels)


def _replicated_host_copy(tree: Any) -> Any:
    """Host copies of replicated arrays, without a collective (only process 0 writes predictions)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), tree)


def _log(message: str) -> None:
    if jax.process_index() == 0:
        print(message, flush=True)
