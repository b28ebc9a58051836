"""Reading and writing PyTorch-layout weight files: ``.pth`` / ``.pt`` and ``.safetensors``.

``.safetensors`` needs only the ``safetensors`` package (numpy API); ``.pth`` needs torch, loaded
with ``weights_only=True`` so that opening a file never runs code from it.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping

import numpy as np

from bisenet_jax.convert.names import to_numpy
from bisenet_jax.convert.state_dict import unwrap_state_dict

TORCH_SUFFIXES = (".pth", ".pt")
SAFETENSORS_SUFFIX = ".safetensors"


def load_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The flat ``{key: numpy array}`` state_dict in a ``.pth`` / ``.pt`` / ``.safetensors`` file.

    Wrapped checkpoints (``{"state_dict": ...}``, ``{"model": ...}``) and DataParallel ``module.``
    prefixes are unwrapped (:func:`~bisenet_jax.convert.state_dict.unwrap_state_dict`).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    suffix = path.suffix.lower()
    if suffix not in TORCH_SUFFIXES + (SAFETENSORS_SUFFIX,):
        raise ValueError(f"{path}: unknown checkpoint format {suffix!r}; expected .pth, .pt or .safetensors")
    if suffix == SAFETENSORS_SUFFIX:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
        read, errors = (lambda: load_file(str(path))), (SafetensorError, OSError)
    else:
        from bisenet_jax.convert.torch_io import load_pth  # torch only for .pth files
        read, errors = (lambda: load_pth(path)), (RuntimeError, EOFError, OSError, ValueError)
    try:
        checkpoint = read()
    except errors as error:  # a truncated or foreign file: name it, not just the library's complaint
        raise ValueError(f"{path} cannot be read as a {suffix} checkpoint ({type(error).__name__}: {error}); "
                         f"is the file complete ({path.stat().st_size} bytes)?") from error
    try:
        state_dict = unwrap_state_dict(checkpoint)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return {k: to_numpy(v) for k, v in state_dict.items()}


def save_torch_checkpoint(state_dict: Mapping[str, Any], path: str | os.PathLike,
                          metadata: Mapping[str, str] | None = None) -> pathlib.Path:
    """Write a flat state_dict to ``.pth`` / ``.pt`` (torch.save) or ``.safetensors``.

    ``metadata`` (strings) goes into the safetensors header; a ``.pth`` holds the bare state_dict,
    so ``model.load_state_dict(torch.load(path, weights_only=True))`` works on it directly.
    """
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == SAFETENSORS_SUFFIX:
        from safetensors.numpy import save_file
        arrays = {k: np.array(to_numpy(v), order="C") for k, v in state_dict.items()}  # keeps 0-d shapes
        save_file(arrays, str(path), metadata={"format": "pt", **{str(k): str(v) for k, v in (metadata or {}).items()}})
    elif suffix in TORCH_SUFFIXES:
        from bisenet_jax.convert.torch_io import save_pth
        save_pth(state_dict, path)
    else:
        raise ValueError(f"{path}: unknown checkpoint format {suffix!r}; expected .pth, .pt or .safetensors")
    return path


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a ``.safetensors`` header (empty for other files)."""
    path = pathlib.Path(path)
    if path.suffix.lower() != SAFETENSORS_SUFFIX:
        return {}
    from safetensors import safe_open
    with safe_open(str(path), framework="np") as f:
        return dict(f.metadata() or {})
