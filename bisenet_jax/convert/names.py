"""The name table between Flax variables and PyTorch ``state_dict`` keys (numpy only, no torch).

The Flax modules are named after the PyTorch ones, so a Flax path maps to a PyTorch key by joining
the module path with dots and renaming the leaf:

    params/.../kernel   -> ....weight        (conv: HWIO -> OIHW)
    params/.../scale    -> ....weight        (BatchNorm gamma)
    params/.../bias     -> ....bias
    batch_stats/.../mean -> ....running_mean
    batch_stats/.../var  -> ....running_var

plus one ``num_batches_tracked`` per BatchNorm on the PyTorch side. ``key_table`` lists every
pair explicitly, so conversion is a lookup in a table, not guesswork.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from flax import traverse_util

_LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def key_table(variables: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """[(flax path incl. collection, torch key)] for every params/batch_stats leaf, in tree order."""
    table = []
    for collection in ("params", "batch_stats"):
        flat = traverse_util.flatten_dict(dict(variables.get(collection, {})))
        for path in flat:
            leaf = _LEAF_TO_TORCH.get((collection, path[-1]))
            if leaf is None:
                raise ValueError(f"no PyTorch name for variable {collection}/{'/'.join(path)}")
            table.append(((collection,) + tuple(path), ".".join(path[:-1] + (leaf,))))
    return table


def to_torch_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    """Flax array -> PyTorch layout (conv kernels HWIO -> OIHW)."""
    value = np.asarray(value)
    if path[-1] == "kernel" and value.ndim == 4:
        return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
    return value


def from_torch_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    """PyTorch array -> Flax layout (conv kernels OIHW -> HWIO)."""
    value = np.asarray(value)
    if path[-1] == "kernel" and value.ndim == 4:
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
    return value


def batch_norm_prefixes(variables: Mapping[str, Any]) -> list[str]:
    """PyTorch module prefixes of every BatchNorm (they carry ``num_batches_tracked``)."""
    flat = traverse_util.flatten_dict(dict(variables.get("batch_stats", {})))
    return sorted({".".join(path[:-1]) for path in flat})


def variables_from_state_dict(state_dict: Mapping[str, Any], template: Mapping[str, Any]) -> dict:
    """Fill a Flax variable tree shaped like ``template`` from a numpy/PyTorch-layout state_dict.

    Raises a ValueError listing missing, unexpected and mis-shaped keys (``num_batches_tracked``
    entries of the template's BatchNorms are accepted and ignored; others are unexpected).
    """
    table = key_table(template)
    flat_template = {path: value for collection in ("params", "batch_stats") for path, value in
                     ((
                         (collection,) + p, v) for p, v in
                         traverse_util.flatten_dict(dict(template.get(collection, {}))).items())}
    expected = {torch_key for _, torch_key in table}
    batch_norms = set(batch_norm_prefixes(template))
    given = {k for k in state_dict if not k.endswith(".num_batches_tracked")}
    stray_counters = {k for k in state_dict
                      if k.endswith(".num_batches_tracked") and k[: -len(".num_batches_tracked")] not in batch_norms}
    missing, unexpected = sorted(expected - given), sorted((given - expected) | stray_counters)
    out, misshaped = {}, []
    for path, torch_key in table:
        if torch_key not in state_dict:
            continue
        value = from_torch_layout(path, to_numpy(state_dict[torch_key]))
        want = tuple(flat_template[path].shape)
        if tuple(value.shape) != want:
            misshaped.append(f"{torch_key}: got {tuple(to_numpy(state_dict[torch_key]).shape)}, "
                             f"expected {tuple(to_torch_layout(path, np.zeros(want)).shape)}")
            continue
        out[path] = value.astype(np.float32)
    if missing or unexpected or misshaped:
        raise ValueError(mismatch_message(missing, unexpected, misshaped))
    nested = traverse_util.unflatten_dict(out)
    return {collection: nested[collection] for collection in ("params", "batch_stats") if collection in nested}


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array from a numpy/JAX array or a torch tensor (bfloat16 widened to float32)."""
    if hasattr(value, "detach"):  # a torch tensor; converted without importing torch here
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def mismatch_message(missing, unexpected, misshaped, limit: int = 20,
                     header: str = "state_dict does not match the model:") -> str:
    """A readable report of missing / unexpected / mis-shaped keys, at most ``limit`` of each."""
    def block(title, items):
        if not items:
            return ""
        shown = "\n  ".join(items[:limit])
        more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
        return f"\n{title} ({len(items)}):\n  {shown}{more}"
    return (header + block("missing keys", missing)
            + block("unexpected keys", unexpected) + block("mis-shaped keys", misshaped))
