"""Where a run's weights come from: one function, one precedence (as big_vision's ``train.py``).

1. The workdir's own checkpoints: the run was preempted or stopped, and continues exactly (state,
   optimizer and data iterator); nothing below is consulted.
2. ``train.init_checkpoint``: every weight of a trained model (a bisenet_jax model directory or
   training workdir, or a PyTorch BiSeNet ``.pth``/``.safetensors``). When its class count differs
   from the config's, the classifier layers keep their fresh initialisation (fine-tuning onto a
   new dataset) and the log names each of them.
3. ``train.init_backbone``: a torchvision ImageNet ResNet for BiSeNetV1's context path.
4. From scratch: the setup's random initialisation.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from flax import traverse_util

from bisenet_jax import checkpoints, convert


def initial_state(config, setup, manager, data_iter, *, log: Callable[[str], None] = print):
    """(state, data_iter) to start training from, following the precedence above."""
    # 1. Resume this workdir.
    restored = checkpoints.restore_latest(manager, setup.abstract_state(), data_iter,
                                          strict=config.train.strict_resume, log=log)
    if restored is not None:
        log(f"resumed from {manager.directory}/{restored.step} (step {int(restored.state.step)})")
        return restored.state, restored.data_iter
    state = setup.state
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    # 2. A trained model, possibly with another class count.
    if config.train.init_checkpoint:
        if config.train.init_backbone:
            log(f"train.init_checkpoint is set: train.init_backbone ({config.train.init_backbone}) is not used")
        source, source_classes = load_weights(str(config.train.init_checkpoint), config.model.name,
                                              config.model.aux_heads)
        variables, reinitialised = merge_for_finetuning(jax.device_get(variables), source, source_classes,
                                                        config.model.num_classes,
                                                        where=str(config.train.init_checkpoint))
        log(f"initialised from {config.train.init_checkpoint}" + (
            f"; {len(reinitialised)} classifier parameters re-initialised for {config.model.num_classes} classes "
            f"(the source has {source_classes}): {', '.join(reinitialised)}" if reinitialised else ""))
    # 3. An ImageNet backbone.
    elif config.train.init_backbone:
        variables = convert.load_torchvision_backbone(jax.device_get(variables),
                                                      convert.load_torch_checkpoint(config.train.init_backbone))
        log(f"initialised the backbone from {config.train.init_backbone}")
    # 4. From scratch.
    else:
        return state, data_iter
    return jax.device_put(state.replace(**variables), setup.state_shardings), data_iter


def load_weights(path: str, model_name: str, aux_heads: bool) -> tuple[dict, int]:
    """(variables, class count) of a JAX checkpoint or a PyTorch BiSeNet file, for ``model_name``."""
    if path.endswith(convert.TORCH_SUFFIXES + (convert.SAFETENSORS_SUFFIX,)):
        state_dict = convert.load_torch_checkpoint(path)
        num_classes = convert.num_classes_from_state_dict(state_dict, model_name)
        return convert.from_torch_state_dict(state_dict, model_name, aux_heads=aux_heads), num_classes
    variables, info = checkpoints.load_model(path)
    checkpoints.check_meta(info, {"model_name": model_name}, where=path)
    return variables, int(info["num_classes"])


def merge_for_finetuning(target: dict, source: dict, source_classes: int, target_classes: int,
                         where: str) -> tuple[dict, list[str]]:
    """``target`` with every leaf taken from ``source``, except classifier leaves of another class count.

    A leaf is a classifier leaf when its last axis is the class count in both trees
    (``source_classes`` in the source, ``target_classes`` in the target). Any other difference
    (a missing layer, another width) is an error naming the parameter: the source is another model.
    Returns the merged tree and the '/'-joined names of the re-initialised leaves.
    """
    merged, reinitialised, problems = {}, [], []
    for collection in ("params", "batch_stats"):
        flat_target = traverse_util.flatten_dict(target.get(collection, {}))
        flat_source = traverse_util.flatten_dict(source.get(collection, {}))
        out = {}
        for key, value in flat_target.items():
            name = "/".join((collection, *key))
            if key not in flat_source:
                if collection == "params" or flat_source:
                    problems.append(f"{name} is missing")
                out[key] = value
                continue
            found = np.asarray(flat_source[key])
            if found.shape == value.shape:
                out[key] = found.astype(np.asarray(value).dtype)
            elif (source_classes != target_classes and found.shape[:-1] == value.shape[:-1]
                  and found.shape[-1] == source_classes and value.shape[-1] == target_classes):
                out[key] = value
                reinitialised.append(name)
            else:
                problems.append(f"{name} has shape {found.shape}, the model needs {tuple(value.shape)}")
        merged[collection] = traverse_util.unflatten_dict(out)
    if problems:
        raise checkpoints.CheckpointMismatchError(
            f"{where} does not fit the model: {'; '.join(problems[:5])}"
            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    return merged, reinitialised
