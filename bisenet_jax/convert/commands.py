"""The operations behind ``scripts/convert.py``: JAX checkpoints <-> PyTorch files.

JAX checkpoints are what :mod:`bisenet_jax.checkpoints` reads and writes (a model directory from
``save_model`` or a training workdir); PyTorch files are ``.pth`` / ``.pt`` / ``.safetensors``
state_dicts in the reference layout.
"""
from __future__ import annotations

import os
import pathlib

from bisenet_jax.convert.files import (SAFETENSORS_SUFFIX, TORCH_SUFFIXES, load_torch_checkpoint,
                                       read_safetensors_metadata, save_torch_checkpoint)
from bisenet_jax.convert.state_dict import (from_torch_state_dict, guess_model_name, num_classes_from_state_dict,
                                            to_torch_state_dict)


def is_torch_file(path: str | os.PathLike) -> bool:
    return pathlib.Path(path).suffix.lower() in TORCH_SUFFIXES + (SAFETENSORS_SUFFIX,)


def export_to_torch(checkpoint: str | os.PathLike, output: str | os.PathLike, *, aux_heads: bool = True) -> dict:
    """JAX checkpoint -> ``.pth`` / ``.safetensors``. Returns the checkpoint's info (model_name, ...)."""
    from bisenet_jax.checkpoints import load_model
    variables, info = load_model(checkpoint)
    state_dict = to_torch_state_dict(variables, info["model_name"], aux_heads=aux_heads)
    metadata = {"model_name": info["model_name"], "num_classes": info["num_classes"]}
    if info.get("dataset"):
        metadata["dataset"] = info["dataset"]
    save_torch_checkpoint(state_dict, output, metadata)
    return {**info, "num_keys": len(state_dict)}


def load_torch_file(path: str | os.PathLike, model_name: str | None = None,
                    aux_heads: bool | None = None) -> tuple[dict, dict]:
    """``(variables, info)`` from a PyTorch file; the model comes from ``model_name``, else the
    safetensors metadata written by :func:`export_to_torch`, else the keys."""
    state_dict = load_torch_checkpoint(path)
    metadata = read_safetensors_metadata(path)
    model_name = model_name or metadata.get("model_name") or guess_model_name(state_dict)
    if model_name is None:
        raise ValueError(f"{path}: cannot tell which BiSeNet this is from its keys "
                         f"(first keys: {list(state_dict)[:5]}); pass --model")
    try:
        variables = from_torch_state_dict(state_dict, model_name, aux_heads=aux_heads)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    info = {"model_name": model_name, "num_classes": num_classes_from_state_dict(state_dict, model_name),
            "dataset": metadata.get("dataset")}
    return variables, info


def import_from_torch(path: str | os.PathLike, output: str | os.PathLike, *, model_name: str | None = None,
                      dataset: str | None = None, aux_heads: bool | None = None) -> dict:
    """``.pth`` / ``.safetensors`` -> a JAX model directory (``checkpoints.save_model``)."""
    from bisenet_jax.checkpoints import save_model
    variables, info = load_torch_file(path, model_name, aux_heads)
    info["dataset"] = dataset or info.get("dataset")
    save_model(output, variables, model_name=info["model_name"], num_classes=info["num_classes"],
               dataset=info["dataset"], extra={"converted_from": str(pathlib.Path(path).absolute())})
    return info


def load_any(path: str | os.PathLike, model_name: str | None = None) -> tuple[dict, dict]:
    """``(variables, info)`` from a JAX checkpoint or a PyTorch file."""
    if is_torch_file(path):
        return load_torch_file(path, model_name)
    from bisenet_jax.checkpoints import load_model
    return load_model(path)
