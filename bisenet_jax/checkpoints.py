"""Every checkpoint read and write of the project, through orbax's ``CheckpointManager`` only.

One layout serves training runs and exported models: a manager directory whose steps hold the items
``state`` (a TrainState, or just ``{"params", "batch_stats"}`` for a model directory written by
:func:`save_model`), ``meta`` (JSON: model name, class count, dataset, classes) and, for training,
``data_iter`` (each process's grain iterator state, so a resumed run sees the batches it would have
seen). A training workdir keeps it under ``<workdir>/checkpoints``.

- Resume: :func:`restore_latest` restores the newest step that restores completely onto abstract
  targets; a damaged step is reported by number and left in place, and the next older one is tried
  (``strict=True`` refuses instead).
- Params-only loads (evaluate, predict, convert, export, fine-tuning): :func:`load_model` restores
  just ``params`` and ``batch_stats`` by a partial restore whose target comes from orbax's own
  item metadata, so the optimizer state is never read.
- The best step by validation mIoU is orbax's ``best_step()`` (``best_fn`` over the metrics saved
  with each step); the preservation policy keeps it together with the last ``keep`` steps.

Nothing here reads orbax's files by path: step lists, metadata and the best step come from the
manager.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
from typing import Any, Callable, Mapping

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from bisenet_jax import paths

CHECKPOINTS_DIR = "checkpoints"
TRAIN_ITEMS = ("state", "data_iter", "meta")
MODEL_ITEMS = ("state", "meta")
BEST_METRIC = "val_miou"


class CheckpointMismatchError(ValueError):
    """A checkpoint whose model or class count differs from the config."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged or incomplete; the message names the step and the path."""


class _ExpectedNotes(logging.Filter):
    """Drops orbax warnings about what this module does on purpose: steps saved between evaluations
    carry no val mIoU, and evaluate/predict/export open managers read-only. Other warnings pass."""

    EXPECTED = ("did not provide metrics", "read_only=True, setting", "Given directory is read only")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(note in record.getMessage() for note in self.EXPECTED)


logging.getLogger("absl").addFilter(_ExpectedNotes())


def _best_fn(metrics: Mapping[str, float]) -> float:
    return metrics[BEST_METRIC]


def create_manager(directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True,
                   read_only: bool = False, items: tuple[str, ...] = TRAIN_ITEMS) -> ocp.CheckpointManager:
    """A manager over ``directory`` (local or ``gs://``): keeps the last ``keep`` steps and the best one by val mIoU.

    On GCS, which has no atomic rename, orbax marks a finished step with a ``commit_success.txt``; a
    step without it is not listed, and ``cleanup_tmp_directories`` removes it at the next start.
    """
    directory = paths.path(directory, absolute=True)
    if read_only:
        # Handlers registered up front so that item_metadata() can describe a step before any restore;
        # the state is read as a PyTree, which allows partial (params-only) restores.
        options = ocp.CheckpointManagerOptions(read_only=True, best_fn=_best_fn, best_mode="max")
        return ocp.CheckpointManager(directory, options=options, item_handlers={
            "state": ocp.PyTreeCheckpointHandler(), "meta": ocp.JsonCheckpointHandler(),
            "data_iter": grain.checkpoint.CheckpointHandler()})
    preservation = ocm.AnyPreservationPolicy([
        ocm.LatestN(n=keep),
        ocm.BestN(get_metric_fn=_best_fn, reverse=False, n=1, keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation, enable_async_checkpointing=async_save, create=True,
        cleanup_tmp_directories=True, best_fn=_best_fn, best_mode="max")
    return ocp.CheckpointManager(directory, options=options, item_names=items)


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iter: Any, meta: Mapping[str, Any],
         val_miou: float | None = None) -> None:
    """Save ``step`` (asynchronously when the manager is async); ``val_miou`` feeds the best-step policy."""
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave({**meta, "step": int(step)})}
    if data_iter is not None:
        items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    metrics = {BEST_METRIC: float(val_miou)} if val_miou is not None else None
    try:  # a synchronous save fails here; an asynchronous one at the next save or wait_for_saves
        manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
    except Exception as error:
        raise save_error(manager, error, state_nbytes(state)) from error


def wait_for_saves(manager: ocp.CheckpointManager, needed_bytes: int | None = None) -> None:
    """Wait for pending (asynchronous) saves; a failed save becomes one :class:`CheckpointError` that
    says why, how much a step needs and which step is the last complete one."""
    try:
        manager.wait_until_finished()
    except Exception as error:
        raise save_error(manager, error, needed_bytes) from error


def save_error(manager: ocp.CheckpointManager, error: BaseException, needed_bytes: int | None) -> CheckpointError:
    text = " ".join(str(e) for e in _chain(error))
    codes = {int(c) for c in re.findall(r"os_error_code='?(\d+)", text)}
    codes |= {e.errno for e in _chain(error) if isinstance(e, OSError) and e.errno}
    full = codes & _STORAGE_FULL_ERRNOS or re.search(r"No space left|Disk quota|File too large", text)
    try:
        manager.reload()
        latest = manager.latest_step()
    except Exception:  # the directory itself may be unreadable now
        latest = None
    kept = (f"the last complete step, {latest}, is intact" if latest is not None
            else "no complete step exists yet")
    size = f"; a step needs about {needed_bytes / 1e6:.0f} MB" if needed_bytes else ""
    reason = ("the file system is full or over its quota (" + ", ".join(os.strerror(c) for c in sorted(codes)) + ")"
              if full else _short(error))
    return CheckpointError(f"saving a checkpoint to {manager.directory} failed: {reason}{size}; {kept}. "
                           "Free space (or raise the quota) and run the same command to resume.")


_STORAGE_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _chain(error: BaseException):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
    try:
        return dict(manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
    except Exception as error:  # orbax raises KeyError, FileNotFoundError, ValueError... for a missing item
        raise CheckpointError(f"step {step} in {manager.directory}: its metadata (item 'meta') cannot be read "
                              f"({_short(error)})") from error


def check_meta(found: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
    """Refuse a checkpoint whose model or class count does not match the config, saying what differs."""
    diffs = [f"{key}: checkpoint has {found.get(key)!r}, config has {expected[key]!r}"
             for key in ("model_name", "num_classes") if key in expected and found.get(key) != expected[key]]
    if diffs:
        raise CheckpointMismatchError(
            f"checkpoint {where} does not match the config ({'; '.join(diffs)}). Use a new --workdir, "
            "or set the config to the checkpoint's model.")


# --------------------------------------------------------------------------------------------
# Resume (full state + data iterator), falling back past damaged steps.


@dataclasses.dataclass
class Restored:
    step: int
    state: Any
    data_iter: Any
    meta: dict
    skipped: list[tuple[int, str]]  # (step, what is wrong with it), newest first


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any, data_iter: Any, *,
                   strict: bool = False, log: Callable[[str], None] = print) -> Restored | None:
    """Restore the newest step that restores completely; ``None`` if the manager holds no step.

    A step that fails (a truncated array file, a missing item, unreadable metadata) is reported by
    number with what is wrong, left on disk untouched, and the next older step is tried. With
    ``strict`` the first such step raises :class:`CheckpointError` instead.
    """
    skipped: list[tuple[int, str]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            meta = read_meta(manager, step)
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if data_iter is not None:
                items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
            restored = manager.restore(step, args=ocp.args.Composite(**items))
        except CheckpointMismatchError:
            raise
        except Exception as error:  # what orbax/tensorstore raise for damaged files varies by format
            problem = _short(error)
            if strict:
                raise CheckpointError(
                    f"step {step} in {manager.directory} is damaged or incomplete ({problem}); it was left in "
                    "place. Remove it (or drop train.strict_resume) to resume from an older step.") from error
            skipped.append((step, problem))
            log(f"WARNING: checkpoint step {step} in {manager.directory} cannot be restored ({problem}); "
                "left in place, trying the previous step")
            continue
        if skipped:
            log(f"resuming from step {step}, the newest step that restores (skipped "
                f"{', '.join(str(s) for s, _ in skipped)})")
        return Restored(step, restored["state"], restored.get("data_iter") if data_iter is not None else None,
                        meta, skipped)
    if skipped:
        raise CheckpointError(f"no step in {manager.directory} restores: "
                              + "; ".join(f"step {s}: {p}" for s, p in skipped))
    return None


def check_first_restorable(manager: ocp.CheckpointManager, expected_meta: Mapping[str, Any], *,
                           strict: bool = False) -> int | None:
    """Before any compilation: the newest step whose metadata reads, checked against ``expected_meta``."""
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            meta = read_meta(manager, step)
        except CheckpointError:
            if strict:
                raise
            continue
        check_meta(meta, expected_meta, where=f"{manager.directory}/{step}")
        return step
    return None


# --------------------------------------------------------------------------------------------
# Model directories and params-only loads.


def save_model(path: str | os.PathLike, variables: Mapping[str, Any], *, model_name: str, num_classes: int,
               dataset: str | None = None, extra: Mapping[str, Any] | None = None) -> paths.Path:
    """Write ``variables`` ({"params", "batch_stats"}) and their description as a one-step model directory."""
    path = paths.path(path, absolute=True)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} already exists and is not empty; choose a new output directory")
    tree = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
    meta = {"model_name": model_name, "num_classes": int(num_classes), "dataset": dataset, **(extra or {})}
    with create_manager(path, keep=1, async_save=False, items=MODEL_ITEMS) as manager:
        manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))
        manager.wait_until_finished()
    return path


def open_checkpoint(path: str | os.PathLike) -> tuple[ocp.CheckpointManager, int]:
    """(read-only manager, step) for a model directory, a training workdir or one of its step folders.

    The step is the best by validation mIoU when the run recorded one, else the latest.
    """
    path = paths.path(path, absolute=True)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path {path} does not exist")
    candidates = [(path / CHECKPOINTS_DIR, None), (path, None)]
    if path.name.isdigit():
        candidates.append((path.parent, int(path.name)))
    for directory, step in candidates:
        if not directory.is_dir():
            continue
        manager = create_manager(directory, read_only=True)
        steps = manager.all_steps()
        if step is not None and step in steps:
            return manager, step
        if step is None and steps:
            best = manager.best_step()
            return manager, best if best is not None else max(steps)
        manager.close()
    raise FileNotFoundError(
        f"no checkpoint found in {path}: expected a model directory (scripts/convert.py, save_model), a training "
        f"workdir ({CHECKPOINTS_DIR}/<step>) or one of its step folders")


def load_model(path: str | os.PathLike, step: int | None = None) -> tuple[dict, dict]:
    """``(variables, info)`` of a model directory, a training workdir or one of its steps.

    Only ``params`` and ``batch_stats`` are restored (a partial restore on targets built from the
    step's own metadata); they come back as host numpy arrays. ``info`` holds at least
    ``model_name``, ``num_classes`` and ``step``.
    """
    manager, chosen = open_checkpoint(path)
    step = chosen if step is None else step
    with manager:
        info = read_meta(manager, step)
        try:
            tree = manager.item_metadata(step)["state"]
            tree = getattr(tree, "tree", tree)
            wanted = {k: tree[k] for k in ("params", "batch_stats") if k in tree}
            if "params" not in wanted:
                raise KeyError("the state has no 'params'")
            abstract = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), wanted)
            restore_args = jax.tree_util.tree_map(lambda _: ocp.ArrayRestoreArgs(restore_type=np.ndarray), abstract)
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                item=abstract, restore_args=restore_args, partial_restore=True)))["state"]
        except Exception as error:
            others = [s for s in manager.all_steps() if s != step]
            hint = f"; other steps there: {others}" if others else ""
            raise CheckpointError(f"step {step} in {manager.directory} cannot be read ({_short(error)}){hint}") from error
    info.setdefault("step", step)
    variables = {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}
    return jax.tree_util.tree_map(np.asarray, variables), info


def state_nbytes(tree: Any) -> int:
    """Bytes of the arrays of a state: about what one checkpoint step takes on disk."""
    return int(sum(getattr(x, "nbytes", 0) for x in jax.tree_util.tree_leaves(tree)))


def _short(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception, shortened: orbax/tensorstore messages can be pages long."""
    text = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    return text if len(text) <= limit else text[:limit] + "..."
