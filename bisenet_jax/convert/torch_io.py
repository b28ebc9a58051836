"""torch-side file and tensor helpers: the only place ``.pth`` files are read or written.

A leaf module: it imports torch and numpy, nothing of bisenet_jax.
"""
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

