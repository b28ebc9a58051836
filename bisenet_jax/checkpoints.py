"""Model checkpoints on disk: what evaluation, prediction and conversion read and write.

Two layouts are accepted by :func:`load_model`:

- a *model directory* written by :func:`save_model`: ``model.json`` (model name, class count,
  dataset) and ``variables/`` (an orbax checkpoint of ``{"params", "batch_stats"}``);
- a *training workdir* (``bisenet_jax.train``): ``checkpoints/<step>/{state,meta,...}`` written by an
  orbax ``CheckpointManager``; the best step by validation mIoU is used when one is recorded in
  ``checkpoints/best.json``, else the latest step. A single step folder works too.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

MODEL_INFO_FILE = "model.json"
VARIABLES_DIR = "variables"
CHECKPOINTS_DIR = "checkpoints"
BEST_FILE = "best.json"


def save_model(path: str | pathlib.Path, variables: Mapping[str, Any], *, model_name: str, num_classes: int,
               dataset: str | None = None, extra: Mapping[str, Any] | None = None) -> pathlib.Path:
    """Write ``variables`` ({"params", "batch_stats"}) and their description to a model directory."""
    path = pathlib.Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    if (path / VARIABLES_DIR).exists():
        raise FileExistsError(f"{path / VARIABLES_DIR} already exists; choose a new output directory")
    tree = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path / VARIABLES_DIR, tree)
    checkpointer.wait_until_finished()
    info = {"model_name": model_name, "num_classes": int(num_classes), "dataset": dataset, **(extra or {})}
    if jax.process_index() == 0:
        (path / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2))
    return path


def load_model(path: str | pathlib.Path) -> tuple[dict, dict]:
    """Read ``(variables, info)`` from a model directory, a training workdir or one of its steps.

    ``info`` holds at least ``model_name`` and ``num_classes`` (and ``step`` for training
    checkpoints). Arrays come back as host numpy arrays.
    """
    path = pathlib.Path(path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path {path} does not exist")
    if (path / MODEL_INFO_FILE).is_file():
        info = json.loads((path / MODEL_INFO_FILE).read_text())
        tree = ocp.StandardCheckpointer().restore(path / VARIABLES_DIR)
        return _to_numpy(tree), info
    step_dir = _find_step_dir(path)
    meta = json.loads((step_dir / "meta" / "metadata").read_text()) if (step_dir / "meta" / "metadata").is_file() \
        else _read_json_item(step_dir / "meta")
    state = ocp.StandardCheckpointer().restore(step_dir / "state")
    variables = {"params": state["params"], "batch_stats": state.get("batch_stats", {})}
    info = dict(meta)
    info.setdefault("step", int(step_dir.name))
    return _to_numpy(variables), info


def _find_step_dir(path: pathlib.Path) -> pathlib.Path:
    if (path / "state").is_dir():
        return path
    ckpt_dir = path / CHECKPOINTS_DIR if (path / CHECKPOINTS_DIR).is_dir() else path
    steps = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.is_dir() and p.name.isdigit()
                   and (p / "state").is_dir())
    if not steps:
        raise FileNotFoundError(
            f"no checkpoint found in {path}: expected a model directory ({MODEL_INFO_FILE} + {VARIABLES_DIR}/), "
            f"a training workdir ({CHECKPOINTS_DIR}/<step>/state) or a step folder (<step>/state)")
    best_file = ckpt_dir / BEST_FILE
    if best_file.is_file():
        best = json.loads(best_file.read_text()).get("step")
        if best in steps:
            return ckpt_dir / str(best)
    return ckpt_dir / str(steps[-1])


def _read_json_item(item_dir: pathlib.Path) -> dict:
    files = sorted(item_dir.glob("*")) if item_dir.is_dir() else []
    for f in files:
        try:
            return json.loads(f.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError, IsADirectoryError):
            continue
    raise FileNotFoundError(f"no model metadata found in {item_dir}; is this a bisenet_jax checkpoint?")


def _to_numpy(tree: Any) -> Any:
    return jax.tree_util.tree_map(np.asarray, tree)
