"""JAX variables <-> PyTorch ``state_dict`` for the BiSeNet models (numpy only; torch is optional).

* :func:`to_torch_state_dict` — variables to the PyTorch layout (``num_batches_tracked`` included),
  loadable with ``strict=True`` into the training-mode models of
  :mod:`bisenet_jax.convert.torch_models` and of the widely used PyTorch implementation.
* :func:`from_torch_state_dict` — the reverse, inferring the class count (and, if not given, the
  model) from the keys.
* :func:`load_torchvision_backbone` — torchvision ImageNet ResNet weights into a BiSeNetV1
  variable tree's ``cp.resnet`` backbone.

State dicts may be given as numpy arrays or torch tensors, wrapped in ``{"state_dict": ...}`` /
``{"model": ...}`` and with DataParallel ``module.`` prefixes (:func:`unwrap_state_dict`).
"""
from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from bisenet_jax.convert.names import (batch_norm_prefixes, key_table, mismatch_message, to_numpy, to_torch_layout,
                                       variables_from_state_dict)

# The classifier whose output channels are the class count, per model family (PyTorch key).
_CLASSIFIER_KEY = {"v1": "conv_out.conv_out.weight", "v2": "head.conv_out.1.weight"}
# Training-only auxiliary heads (PyTorch key prefixes).
AUX_HEAD_PREFIXES = {"v1": ("conv_out16.", "conv_out32."), "v2": ("aux2.", "aux3.", "aux4.", "aux5_4.")}
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
_STRIPPED_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile
_RESNET_DEPTHS = {(False, 2): 18, (False, 6): 34, (True, 6): 50, (True, 23): 101}


def model_family(model_name: str) -> str:
    """``"v1"`` or ``"v2"``; a ValueError naming the available models for anything else."""
    if model_name == "bisenetv2":
        return "v2"
    if model_name.startswith("bisenetv1_"):
        return "v1"
    from bisenet_jax.models import list_models
    raise ValueError(f"unknown model {model_name!r}; available: {', '.join(list_models())}")


# -------------------------------------------------------------------------------------------------
# JAX -> PyTorch
# -------------------------------------------------------------------------------------------------


def to_torch_state_dict(variables: Mapping[str, Any], model_name: str, *, aux_heads: bool = True,
                        as_torch: bool = False, dtype: Any = np.float32) -> dict[str, Any]:
    """JAX ``{"params", "batch_stats"}`` -> PyTorch ``state_dict`` (conv kernels OIHW).

    Every BatchNorm gets ``running_mean`` / ``running_var`` from ``batch_stats`` and a
    ``num_batches_tracked`` of 0 (int64), so the result has exactly the reference key set and loads
    with ``strict=True`` into ``build_torch_model(model_name, num_classes)`` in training mode.
    ``aux_heads=False`` leaves the training-only auxiliary heads out (a deployment checkpoint, for
    ``build_torch_model(..., aux_heads=False)``). Values are numpy arrays of ``dtype`` (float32; float64
    to compare a float64 model with PyTorch's), or torch tensors with ``as_torch=True``.

    Raises a ValueError listing missing / unexpected / mis-shaped variables if ``variables`` are not
    those of ``model_name``.
    """
    family = model_family(model_name)
    variables = {c: jax.device_get(variables[c]) for c in ("params", "batch_stats") if c in variables}
    if "params" not in variables or "batch_stats" not in variables:
        raise ValueError(f"to_torch_state_dict: expected variables with 'params' and 'batch_stats', "
                         f"got collections {sorted(variables)}")
    has_aux = _has_aux_params(variables["params"], family)
    template = model_template(model_name, num_classes_of_variables(variables, model_name), has_aux)
    _check_variables_match(variables, template, model_name)

    flat = {path: value for path, value in
            ((("params",) + p, v) for p, v in traverse_util.flatten_dict(variables["params"]).items())}
    flat.update((("batch_stats",) + p, v) for p, v in traverse_util.flatten_dict(variables["batch_stats"]).items())
    batch_norms = set(batch_norm_prefixes(variables))
    state_dict: dict[str, np.ndarray] = {}
    for path, torch_key in _torch_ordered(key_table(variables)):
        state_dict[torch_key] = to_torch_layout(path, np.asarray(flat[path], dtype=dtype))
        module = torch_key.rsplit(".", 1)[0]
        if torch_key.endswith(".running_var") and module in batch_norms:
            state_dict[f"{module}.num_batches_tracked"] = np.array(0, dtype=np.int64)
    if not aux_heads:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(AUX_HEAD_PREFIXES[family])}
    if as_torch:
        from bisenet_jax.convert.torch_io import to_tensors  # torch only when asked for
        return to_tensors(state_dict)
    return state_dict


def _torch_ordered(table):
    """Order like PyTorch: per module weight, bias, running_mean, running_var (then the counter)."""
    rank = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3}
    module_order: dict[str, int] = {}
    for _, key in table:
        module_order.setdefault(key.rsplit(".", 1)[0], len(module_order))
    return sorted(table, key=lambda row: (module_order[row[1].rsplit(".", 1)[0]], rank[row[1].rsplit(".", 1)[1]]))


def _check_variables_match(variables, template, model_name: str) -> None:
    def shapes(tree):
        out = {}
        for path, key in key_table(tree):
            leaf = tree[path[0]]
            for p in path[1:]:
                leaf = leaf[p]
            shape = tuple(leaf.shape)
            out[key] = (shape[3], shape[2], shape[0], shape[1]) if path[-1] == "kernel" and len(shape) == 4 else shape
        return out
    got, want = shapes(variables), shapes(template)
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    misshaped = [f"{k}: got {got[k]}, expected {want[k]}" for k in sorted(set(got) & set(want)) if got[k] != want[k]]
    if missing or unexpected or misshaped:
        raise ValueError(mismatch_message(
            missing, unexpected, misshaped,
            header=f"variables are not those of {model_name!r} (names in PyTorch form):"))


# -------------------------------------------------------------------------------------------------
# PyTorch -> JAX
# -------------------------------------------------------------------------------------------------


def from_torch_state_dict(state_dict: Mapping[str, Any], model_name: str | None = None, *,
                          aux_heads: bool | None = None) -> dict[str, Any]:
    """PyTorch BiSeNet ``state_dict`` -> JAX ``{"params", "batch_stats"}`` (numpy float32 leaves).

    ``model_name=None`` detects the model from the keys (:func:`guess_model_name`). The class count
    is read from the classifier (:func:`num_classes_from_state_dict`): build the model with
    ``create_model(model_name, num_classes, aux_heads=...)``. ``aux_heads=None`` keeps the
    auxiliary heads if the checkpoint has them; ``False`` drops them; ``True`` requires them.

    Raises a ValueError listing missing, unexpected and mis-shaped keys, and a specific one for
    old-layout BiSeNetV1 checkpoints (``ffm.conv1`` / ``ffm.conv2``).
    """
    state_dict = unwrap_state_dict(state_dict)
    reject_old_ffm_layout(state_dict)
    guessed = guess_model_name(state_dict)
    if model_name is None:
        if guessed is None:
            raise ValueError("from_torch_state_dict: cannot tell which BiSeNet this state_dict is "
                             f"(first keys: {list(state_dict)[:5]}); pass model_name explicitly")
        model_name = guessed
    family = model_family(model_name)
    has_aux = has_aux_heads(state_dict, model_name)
    if aux_heads is False:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(AUX_HEAD_PREFIXES[family])}
    num_classes = num_classes_from_state_dict(state_dict, model_name)
    template = model_template(model_name, num_classes, has_aux if aux_heads is None else aux_heads)
    try:
        return variables_from_state_dict(state_dict, template)
    except ValueError as error:
        hint = ""
        if guessed is not None and guessed != model_name:
            hint = f"The keys look like a {guessed!r} checkpoint, not {model_name!r}: pass model_name={guessed!r}.\n"
        elif aux_heads and not has_aux:
            hint = ("The checkpoint has no auxiliary heads (a deployment export): load it into a model without "
                    "them (aux_heads=False; in training --config.model.aux_heads=False), or use a checkpoint "
                    "exported with its auxiliary heads.\n")
        raise ValueError(f"{hint}{error}") from None


def num_classes_from_state_dict(state_dict: Mapping[str, Any], model_name: str) -> int:
    """The class count: output channels of the classifier (``conv_out.conv_out`` / ``head.conv_out.1``)."""
    key = _CLASSIFIER_KEY[model_family(model_name)]
    if key not in state_dict:
        guessed = guess_model_name(state_dict)
        hint = f"; the keys look like a {guessed!r} checkpoint" if guessed and guessed != model_name else ""
        raise ValueError(f"state_dict has no classifier {key!r}, so it is not a {model_name!r} checkpoint{hint} "
                         f"(first keys: {list(state_dict)[:5]})")
    return int(to_numpy(state_dict[key]).shape[0])


def reject_old_ffm_layout(state_dict: Mapping[str, Any]) -> None:
    """A ValueError explaining why a checkpoint with the paper's ``ffm.conv1/conv2`` cannot be converted."""
    if "ffm.conv1.weight" in state_dict and "ffm.conv2.weight" in state_dict:
        shape1 = tuple(to_numpy(state_dict["ffm.conv1.weight"]).shape)
        shape2 = tuple(to_numpy(state_dict["ffm.conv2.weight"]).shape)
        raise ValueError(
            "this is an old-layout BiSeNetV1 checkpoint: its feature fusion module has "
            f"'ffm.conv1.weight' {shape1} and 'ffm.conv2.weight' {shape2} (the paper's two 1x1 convs with a "
            "ReLU, no BatchNorm). bisenet_jax uses the current layout, 'ffm.conv.weight' (256, 256, 1, 1) + "
            "BatchNorm 'ffm.bn.*', as do the released PyTorch checkpoints. The two attention blocks compute "
            "different functions, so the weights cannot be converted: use a checkpoint in the current layout "
            "(or re-train / fine-tune it in the current layout).")


def guess_model_name(state_dict: Mapping[str, Any]) -> str | None:
    """``bisenetv2`` / ``bisenetv1_r18`` ... from the keys alone, or None if they fit none."""
    keys = set(state_dict)
    if any(k.startswith("detail.") for k in keys) and any(k.startswith("segment.") for k in keys):
        return "bisenetv2"
    if any(k.startswith("cp.xception.") for k in keys):
        return "bisenetv1_x39"
    depth = guess_resnet_depth(keys, "cp.resnet.")
    return f"bisenetv1_r{depth}" if depth else None


def guess_resnet_depth(keys, prefix: str = "") -> int | None:
    """18 / 34 / 50 / 101 from torchvision-layout ResNet keys under ``prefix``, or None."""
    keys = set(keys)
    if f"{prefix}layer1.0.conv1.weight" not in keys:
        return None
    bottleneck = f"{prefix}layer1.0.conv3.weight" in keys
    blocks_in_layer3 = sum(1 for i in range(64) if f"{prefix}layer3.{i}.conv1.weight" in keys)
    return _RESNET_DEPTHS.get((bottleneck, blocks_in_layer3))


# -------------------------------------------------------------------------------------------------
# torchvision ImageNet backbones
# -------------------------------------------------------------------------------------------------


def load_torchvision_backbone(variables: Mapping[str, Any], state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Copy torchvision ImageNet ResNet weights into ``params/batch_stats`` ``cp/resnet`` of a BiSeNetV1.

    ``state_dict`` has torchvision's layout (``conv1.weight``, ``layer1.0.bn1.running_mean`` ...,
    ``fc.*``, which is ignored). Everything else must match the backbone exactly; missing,
    unexpected and mis-shaped keys are listed in the ValueError. Returns a new variable tree (other
    variables are kept as given).
    """
    state_dict = {k: v for k, v in unwrap_state_dict(state_dict).items() if not k.startswith("fc.")}
    try:
        backbone = {c: variables[c]["cp"]["resnet"] for c in ("params", "batch_stats")}
    except (KeyError, TypeError):
        raise ValueError("load_torchvision_backbone: these variables have no ResNet context path "
                         "(params/cp/resnet); torchvision ResNet weights fit bisenetv1_r18/r34/r50/r101 only") from None
    try:
        loaded = variables_from_state_dict(state_dict, backbone)
    except ValueError as error:
        have = guess_resnet_depth(state_dict)
        want = guess_resnet_depth({k for _, k in key_table(backbone)})
        hint = f"The weights are a ResNet-{have}, the model's backbone a ResNet-{want}.\n" if have and have != want else ""
        raise ValueError(f"{hint}torchvision backbone: {error}") from None
    out = {c: _replace_subtree(variables[c], ("cp", "resnet"), loaded[c]) if c in loaded else variables[c]
           for c in variables}
    return out


def _replace_subtree(tree: Mapping[str, Any], path: tuple[str, ...], value: Any) -> dict:
    tree = dict(tree)
    tree[path[0]] = value if len(path) == 1 else _replace_subtree(tree[path[0]], path[1:], value)
    return tree


# -------------------------------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------------------------------


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The flat ``{key: array}`` inside a checkpoint as found in the field.

    Unwraps ``{"state_dict": ...}``, ``{"model_state_dict": ...}``, ``{"model": ...}``, ``{"net": ...}``
    (other entries such as ``optimizer`` or ``epoch`` are ignored) and strips a ``module.``
    (DataParallel) or ``_orig_mod.`` (torch.compile) prefix carried by every key.
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"expected a state_dict (a mapping of names to tensors), got {type(checkpoint).__name__}")
    while not _is_flat_state_dict(checkpoint):
        inner = next((checkpoint[k] for k in _WRAPPER_KEYS if isinstance(checkpoint.get(k), Mapping)), None)
        if inner is None:
            raise ValueError(f"cannot find a state_dict in this checkpoint: its top-level keys are "
                             f"{sorted(map(str, checkpoint))[:10]}; expected parameter names mapping to tensors, "
                             f"or such a mapping under one of {list(_WRAPPER_KEYS)}")
        checkpoint = inner
    state_dict = dict(checkpoint)
    for prefix in _STRIPPED_PREFIXES:
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def _is_flat_state_dict(mapping: Mapping[str, Any]) -> bool:
    return bool(mapping) and all(isinstance(k, str) and hasattr(v, "shape") for k, v in mapping.items())


def has_aux_heads(state_dict: Mapping[str, Any], model_name: str) -> bool:
    """Whether a PyTorch state_dict carries the training-only auxiliary heads."""
    return any(k.startswith(AUX_HEAD_PREFIXES[model_family(model_name)]) for k in state_dict)


def _has_aux_params(params: Mapping[str, Any], family: str) -> bool:
    return any(prefix.rstrip(".") in params for prefix in AUX_HEAD_PREFIXES[family])


def num_classes_of_variables(variables: Mapping[str, Any], model_name: str) -> int:
    """The class count of a JAX variable tree: output channels of its classifier kernel."""
    try:
        if model_family(model_name) == "v1":
            kernel = variables["params"]["conv_out"]["conv_out"]["kernel"]
        else:
            kernel = variables["params"]["head"]["conv_out"]["1"]["kernel"]
    except (KeyError, TypeError):
        raise ValueError(f"variables have no classifier of a {model_name!r} model "
                         f"(top-level params: {sorted(variables['params'])})") from None
    return int(kernel.shape[-1])


@functools.lru_cache(maxsize=16)
def model_template(model_name: str, num_classes: int, aux_heads: bool = True):
    """Shapes of ``create_model(model_name, num_classes, aux_heads=...)``'s variables (no compute)."""
    from bisenet_jax.models import create_model
    model = create_model(model_name, num_classes, aux_heads=aux_heads)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
    return {c: shapes[c] for c in ("params", "batch_stats")}
