"""torch-side file and tensor helpers (torch is imported here only)."""
from __future__ import annotations

import os
import pickle
from typing import Any, Mapping

import numpy as np
import torch


def to_tensors(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """numpy (or torch) values -> CPU torch tensors, keeping dtypes (float32 weights, int64 counters)."""
    return {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v, order="C", copy=True))
            for k, v in state_dict.items()}


def load_pth(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain containers only.

    A file that needs arbitrary unpickling (whole pickled modules, custom classes) is refused
    rather than executed.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path}: refusing to load it with weights_only=False, it holds Python objects besides tensors "
            f"({str(error).splitlines()[0]}). If you trust the file, re-save just its weights in PyTorch: "
            "torch.save(torch.load(path, weights_only=False).state_dict(), 'weights.pth')") from None


def save_pth(state_dict: Mapping[str, Any], path: str | os.PathLike) -> None:
    """A plain ``{key: tensor}`` file that ``model.load_state_dict(torch.load(path))`` accepts."""
    torch.save(to_tensors(state_dict), path)


def load_torch_model(path: str | os.PathLike, model_name: str | None = None) -> torch.nn.Module:
    """The shipped PyTorch module (eval mode) with the weights of a ``.pth`` / ``.safetensors`` file.

    The model comes from ``model_name``, else the file's safetensors metadata, else its keys; the
    class count from the classifier; auxiliary heads are built if the file has them. Loaded with
    ``strict=True``.
    """
    from bisenet_jax.convert.files import load_torch_checkpoint, read_safetensors_metadata
    from bisenet_jax.convert.state_dict import (AUX_HEAD_PREFIXES, _family, _reject_old_ffm_layout,
                                                guess_model_name, num_classes_from_state_dict)
    from bisenet_jax.convert.torch_models import build_torch_model

    state_dict = load_torch_checkpoint(path)
    _reject_old_ffm_layout(state_dict)
    model_name = model_name or read_safetensors_metadata(path).get("model_name") or guess_model_name(state_dict)
    if model_name is None:
        raise ValueError(f"{path}: cannot tell which BiSeNet this is from its keys; pass model_name")
    aux_heads = any(k.startswith(AUX_HEAD_PREFIXES[_family(model_name)]) for k in state_dict)
    model = build_torch_model(model_name, num_classes_from_state_dict(state_dict, model_name), aux_heads=aux_heads)
    model.load_state_dict(to_tensors(state_dict), strict=True)
    return model.eval()
