"""Orbax checkpointing of a training run: the train state and the grain iterator state together.

``<workdir>/checkpoints/<step>/`` holds three items: ``state`` (the TrainState, restored onto its
target shardings), ``data_iter`` (each process's grain iterator state, so a resumed run sees exactly
the batches it would have seen) and ``meta`` (model name, class count, dataset: checked on resume
and read by ``bisenet_jax.checkpoints.load_model``). The last ``keep`` steps and the best step by
validation mIoU are preserved; ``best.json`` names the best one.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from bisenet_jax.checkpoints import BEST_FILE, CHECKPOINTS_DIR


class CheckpointMismatchError(ValueError):
    """A checkpoint whose model or class count differs from the config."""


def create_checkpoint_manager(workdir: str | pathlib.Path, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    directory = pathlib.Path(workdir).absolute() / CHECKPOINTS_DIR
    preservation = ocm.AnyPreservationPolicy([
        ocm.LatestN(n=keep),
        ocm.BestN(get_metric_fn=lambda m: m["val_miou"], reverse=False, n=1, keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(preservation_policy=preservation, enable_async_checkpointing=async_save,
                                           create=True, cleanup_tmp_directories=True)
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "data_iter", "meta"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iter: Any, meta: dict,
         val_miou: float | None = None, force: bool = False) -> bool:
    metrics = {"val_miou": float(val_miou)} if val_miou is not None else None
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave({**meta, "step": int(step)})}
    if data_iter is not None:
        items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    saved = manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)
    if saved and val_miou is not None:
        _update_best(manager, step, val_miou)
    return saved


def _update_best(manager: ocp.CheckpointManager, step: int, val_miou: float) -> None:
    if jax.process_index() != 0:
        return
    best_file = pathlib.Path(manager.directory) / BEST_FILE
    best = json.loads(best_file.read_text()) if best_file.is_file() else {}
    if val_miou >= best.get("val_miou", -1.0):
        best_file.write_text(json.dumps({"step": int(step), "val_miou": float(val_miou)}))


def restore(manager: ocp.CheckpointManager, abstract_state: Any, data_iter: Any, step: int) -> tuple[Any, Any]:
    """Restore (state, data_iter) of ``step`` onto the abstract state's shardings."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
        items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], restored["data_iter"] if data_iter is not None else None


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
    return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def check_meta(found: dict, expected: dict, where: str) -> None:
    """Refuse a checkpoint whose model or class count does not match the config, saying what differs."""
    diffs = [f"{key}: checkpoint has {found.get(key)!r}, config has {expected[key]!r}"
             for key in ("model_name", "num_classes") if key in expected and found.get(key) != expected[key]]
    if diffs:
        raise CheckpointMismatchError(
            f"checkpoint {where} does not match the config ({'; '.join(diffs)}). Use a new --workdir, "
            "or set the config to the checkpoint's model.")
