"""``train_and_evaluate``: the training loop, importable from a notebook (``main.py`` only parses flags).

Order of setup (as in big_vision): dataset facts -> mesh -> model -> state created under jit on its
shardings -> data iterator -> checkpoint manager (resume if the workdir has a checkpoint) -> the
jitted, donated train step. Starting the same command on an existing workdir resumes exactly:
the state and the grain iterator state are restored together.
"""
from __future__ import annotations

import json
import pathlib
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bisenet_jax import data as data_lib
from bisenet_jax.train import checkpointing, monitoring
from bisenet_jax.train.state import (batch_sharding, build_model, count_params, create_mesh, create_train_state,
                                     replicated)
from bisenet_jax.train.step import compile_train_step


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


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
        from jax.experimental import multihost_utils
        return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
    """Train ``config`` in ``workdir`` (resuming if it holds a checkpoint); returns the final metrics."""
    workdir = pathlib.Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    info = data_lib.get_dataset_info(config.data)
    _check_config(config, info)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

    mesh = create_mesh(config.mesh.num_devices)
    global_batch = config.train.batch_size
    if global_batch % mesh.size:
        raise ValueError(f"train.batch_size={global_batch} is not divisible by the {mesh.size} devices of the mesh")
    meta = {"model_name": config.model.name, "num_classes": config.model.num_classes, "dataset": info.name,
            "ignore_label": info.ignore_label, "class_names": list(info.class_names)}
    manager = checkpointing.create_checkpoint_manager(workdir, config.train.keep_checkpoints,
                                                      config.train.async_checkpointing)
    resume_step = manager.latest_step()
    if resume_step is not None:  # refuse a mismatching checkpoint before spending time on compilation
        checkpointing.check_meta(checkpointing.read_meta(manager, resume_step), meta,
                                 where=f"{manager.directory}/{resume_step}")

    model = build_model(config)
    crop_h, crop_w = config.data.crop_size
    rng = jax.random.PRNGKey(config.train.seed)
    state, schedule, state_shardings = create_train_state(config, model, mesh, rng, (1, crop_h, crop_w, 3))
    data_iter = data_lib.create_train_iterator(config.data, global_batch, seed=config.train.seed)
    if resume_step is not None:
        abstract = jax.tree_util.tree_map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, state_shardings)
        state, data_iter = checkpointing.restore(manager, abstract, data_iter, resume_step)
        _log(f"resumed from {manager.directory}/{resume_step} (step {int(state.step)})")
    else:
        state = _initialise_from(config, state, state_shardings)

    train_step = compile_train_step(config, state_shardings, batch_sharding(mesh), replicated(mesh), schedule,
                                    info.ignore_label)
    writer = monitoring.MetricWriter(workdir)
    start_step, num_steps = int(state.step), int(config.train.num_steps)
    _log(f"{config.model.name}: {count_params(state.params):,} parameters; {mesh.size} device(s), "
         f"{jax.process_count()} process(es); global batch {global_batch}, crop {crop_h}x{crop_w}; "
         f"steps {start_step} -> {num_steps}; workdir {workdir}")

    pending: list[tuple[int, dict]] = []  # metrics of steps not yet fetched from the devices
    last_good_checkpoint = manager.latest_step()
    budget_s = 60.0 * config.train.time_budget_minutes
    t_start = t_log = time.time()
    final_metrics: dict[str, Any] = {}
    step = start_step
    stop_reason = "done"
    with _Preemption() as preemption, monitoring.progress_bar(num_steps, start_step, config.train.progress_bar) as bar:
        while step < num_steps:
            batch = data_lib.make_global_batch(next(data_iter), batch_sharding(mesh))
            state, metrics = train_step(state, batch)
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
            want_ckpt = want_eval or step % config.train.checkpoint_every == 0
            preempted = preemption.any_process_requested()
            over_budget = budget_s > 0 and time.time() - t_start > budget_s
            if step % config.train.log_every == 0 or want_ckpt or preempted or over_budget:
                timed_steps = sum(1 for s, _ in pending if s > start_step + 1)
                summary = _flush_metrics(pending, last_good_checkpoint, manager)
                elapsed, t_log = time.time() - t_log, time.time()
                if timed_steps:
                    summary["images_per_second"] = timed_steps * global_batch / max(elapsed, 1e-9)
                writer.scalars(step, summary, prefix="train/")
                bar.set_postfix(loss=f"{summary['loss']:.4f}", img_s=f"{summary.get('images_per_second', 0):.1f}")
            if preempted or over_budget:
                stop_reason = "preempted (SIGTERM)" if preempted else f"time budget of {config.train.time_budget_minutes} min reached"
                want_eval, want_ckpt = over_budget and config.train.eval_every >= 0, True
            val_miou = None
            if want_eval:
                results = evaluate_model(config, model, state, info, writer, step, workdir)
                val_miou = results["miou"]
                final_metrics = results
                bar.write(f"step {step}: val mIoU {val_miou:.4f}")
            if want_ckpt:
                checkpointing.save(manager, step, state, data_iter, meta, val_miou=val_miou, force=True)
                last_good_checkpoint = step
            if want_eval or want_ckpt:
                t_log = time.time()  # keep evaluation and checkpointing out of the throughput
            if stop_reason != "done":
                break
    manager.wait_until_finished()
    writer.close()
    if stop_reason != "done":
        _log(f"stopped at step {step}: {stop_reason}; checkpoint saved, run the same command to resume")
    _log(f"checkpoints: {manager.directory}\nTensorBoard: tensorboard --logdir {workdir / 'tensorboard'}\n"
         f"metrics log: {workdir / 'metrics.jsonl'}\npredictions: {workdir / 'predictions'}")
    manager.close()
    return {"step": step, "stop_reason": stop_reason, **final_metrics}


def _flush_metrics(pending: list, last_good_checkpoint, manager) -> dict[str, float]:
    """Fetch pending step metrics; raise on the first non-finite step, naming it."""
    fetched = jax.device_get([m for _, m in pending])
    for (step, _), values in zip(pending, fetched):
        if not bool(values["finite"]):
            where = (f"the last good checkpoint is step {last_good_checkpoint} in {manager.directory}"
                     if last_good_checkpoint is not None else "no checkpoint had been written yet")
            pending.clear()
            raise NonFiniteLossError(
                f"non-finite loss ({float(values['loss'])}) at step {step}; the update was not applied, training "
                f"stopped and {where}. Check the labels (scripts/check_dataset.py), lower optimizer.lr or "
                "set optimizer.grad_clip_norm.")
    keys = [k for k in fetched[0] if k != "finite"]
    summary = {k: float(np.mean([v[k] for v in fetched])) for k in keys}
    summary["lr"] = float(fetched[-1]["lr"])
    pending.clear()
    return summary


def evaluate_model(config, model, state, info, writer, step: int, workdir: pathlib.Path) -> dict[str, Any]:
    """Single-scale validation over the eval split; logs mIoU, per-class IoU and coloured predictions."""
    from bisenet_jax.evaluation import evaluator

    variables = {"params": state.params, "batch_stats": state.batch_stats}
    batches = data_lib.create_eval_dataset(config.data, config.data.eval_split, config.eval.batch_size)
    eval_config = config.eval.copy_and_resolve_references()
    results = evaluator.evaluate(model, variables, batches, info.num_classes, info.ignore_label, eval_config,
                                 progress=False, class_names=info.class_names)
    writer.scalars(step, {"miou": results["miou"], "pixel_accuracy": results["pixel_accuracy"],
                          **{f"iou/{name}": iou for name, iou in zip(info.class_names, results["iou"])
                             if iou == iou}}, prefix="val/")
    _write_predictions(config, model, variables, info, writer, step, workdir)
    return results


def _write_predictions(config, model, variables, info, writer, step: int, workdir: pathlib.Path) -> None:
    """image | ground truth | prediction, coloured with the dataset palette, to TensorBoard and PNG."""
    n = config.train.num_prediction_images
    if n <= 0 or jax.process_index() != 0:
        return
    from PIL import Image

    source = data_lib.create_source(config.data, config.data.eval_split)
    out_dir = workdir / "predictions" / f"step_{step:07d}"
    out_dir.mkdir(parents=True, exist_ok=True)
    mean, std = np.asarray(info.mean, np.float32), np.asarray(info.std, np.float32)
    panels = []
    for index in range(min(n, len(source))):
        record = source[index]
        image = record["image"]
        x = ((image.astype(np.float32) / 255.0 - mean) / std)[None]
        prediction = np.asarray(jnp.argmax(model.apply(variables, x, train=False), axis=-1))[0]
        label = record["label"].astype(np.int64)
        gt = np.where((label >= 0) & (label < info.num_classes), label, 0)
        gt_rgb = np.where((label == info.ignore_label)[..., None], 0, info.palette[gt]).astype(np.uint8)
        panel = np.concatenate([image, gt_rgb, info.palette[prediction]], axis=1)
        Image.fromarray(panel).save(out_dir / f"{index:03d}_{record.get('id', index)}.png")
        panels.append(panel)
    writer.images(step, "val/prediction", panels)


def _initialise_from(config, state, state_shardings):
    """Optional initialisation from a torchvision ResNet (backbone) and/or a full checkpoint."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    changed = False
    if config.train.init_backbone:
        from bisenet_jax.convert.files import load_torch_checkpoint
        from bisenet_jax.convert.state_dict import load_torchvision_backbone
        variables = load_torchvision_backbone(jax.device_get(variables),
                                              load_torch_checkpoint(config.train.init_backbone))
        changed = True
        _log(f"initialised the backbone from {config.train.init_backbone}")
    if config.train.init_checkpoint:
        path = str(config.train.init_checkpoint)
        if path.endswith((".pth", ".pt", ".safetensors")):  # a PyTorch BiSeNet checkpoint
            from bisenet_jax.convert.files import load_torch_checkpoint
            from bisenet_jax.convert.state_dict import from_torch_state_dict, num_classes_from_state_dict
            state_dict = load_torch_checkpoint(path)
            found = {"model_name": config.model.name,
                     "num_classes": num_classes_from_state_dict(state_dict, config.model.name)}
            checkpointing.check_meta(found, {"num_classes": config.model.num_classes}, where=path)
            loaded = from_torch_state_dict(state_dict, config.model.name, aux_heads=config.model.aux_heads)
        else:
            from bisenet_jax.checkpoints import load_model
            loaded, found = load_model(path)
            checkpointing.check_meta(found, {"model_name": config.model.name,
                                             "num_classes": config.model.num_classes}, where=path)
        variables = {"params": loaded["params"], "batch_stats": loaded.get("batch_stats", variables["batch_stats"])}
        changed = True
        _log(f"initialised every weight from {path}")
    if not changed:
        return state
    return jax.device_put(state.replace(**variables), state_shardings)


def _check_config(config, info) -> None:
    if config.model.num_classes != info.num_classes:
        raise ValueError(
            f"config.model.num_classes={config.model.num_classes} but dataset {info.name!r} has "
            f"{info.num_classes} classes (ignore label {info.ignore_label} is not a class); set "
            f"--config.model.num_classes={info.num_classes}")


def _log(message: str) -> None:
    if jax.process_index() == 0:
        print(message, flush=True)
