"""Model registry: ``create_model(name, num_classes, **options)``; ``init_variables(model, seed)`` initialises one.

Names: bisenetv1_r18, bisenetv1_r34, bisenetv1_r50, bisenetv1_r101, bisenetv1_x39, bisenetv2.
Options: ``dtype`` (compute dtype, e.g. ``jnp.bfloat16`` or ``"bfloat16"``; parameters, BN
statistics and logits stay float32), ``aux_heads`` (build the training-only auxiliary heads) and
``kernels`` (``"auto"``, ``"cpu"``, ``"xla"`` or a :class:`~bisenet_jax.models.kernels.Kernels`:
how depthwise convolutions and max pools are computed; "auto" picks by backend, once, here);
BiSeNetV2 also ``dropout`` (the heads' dropout rate, default 0.1).
"""
from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from bisenet_jax import xla_flags

from bisenet_jax.models.bisenetv1 import BiSeNetV1
from bisenet_jax.models.bisenetv2 import BiSeNetV2
from bisenet_jax.models.kernels import CPU_KERNELS, XLA_KERNELS, Kernels, default_kernels, get_kernels
from bisenet_jax.models.layers import MIN_INPUT_SIZE, ConvBNReLU, resize

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "bisenetv1_r18": functools.partial(BiSeNetV1, backbone="resnet18"),
    "bisenetv1_r34": functools.partial(BiSeNetV1, backbone="resnet34"),
    "bisenetv1_r50": functools.partial(BiSeNetV1, backbone="resnet50"),
    "bisenetv1_r101": functools.partial(BiSeNetV1, backbone="resnet101"),
    # The authors' Xception39 heads: mid 64 on the fused feature, 128 on the auxiliary heads.
    "bisenetv1_x39": functools.partial(BiSeNetV1, backbone="xception39", head_mid=64, aux_mid=128),
    "bisenetv2": BiSeNetV2,
}

_MODEL_OPTIONS = {"bisenetv2": {"dropout"}}  # options only some models have


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build a registered model. Unknown names or options fail with the list of valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    allowed = {"dtype", "aux_heads", "kernels"} | _MODEL_OPTIONS.get(name, set())
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for {name}; allowed: {sorted(allowed)}")
    rate = options.get("dropout", 0.0)
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout must be a rate in [0, 1), got {rate!r}")
    if isinstance(options.get("dtype"), str):
        options["dtype"] = jnp.dtype(options["dtype"])
    options["kernels"] = get_kernels(options.get("kernels", "auto"))
    return _REGISTRY[name](num_classes=num_classes, **options)


def init_variables(model: nn.Module, rng: int | jax.Array = 0,
                   input_shape: Sequence[int] = (1, 64, 64, 3)) -> dict[str, Any]:
    """``model.init(rng, zeros(input_shape), train=False)`` (``rng``: a seed or a key) as one compiled program,
    with the initialisation's compiler options (``xla_flags.init_options``). The parameters do not depend on
    ``input_shape`` (any size the model takes will do). Eagerly, ``model.init`` dispatches thousands of small
    ops (56 s for V2 on 2 cores); under a plain ``jax.jit`` its compilation takes 13-26 s at XLA:CPU's
    default optimisation; this compiles in 5-14 s (measured in session 25, docs/profile.md)."""
    if isinstance(rng, bool) or not isinstance(rng, (numbers.Integral, jax.Array)):
        raise TypeError(f"rng must be an integer seed or a jax.random key, got {rng!r}")
    key = jax.random.key(int(rng)) if isinstance(rng, numbers.Integral) else rng
    init = jax.jit(lambda key: model.init(key, jnp.zeros(tuple(input_shape), jnp.float32), train=False))
    return init.lower(key).compile(compiler_options=xla_flags.init_options())(key)


__all__ = ["BiSeNetV1", "BiSeNetV2", "CPU_KERNELS", "ConvBNReLU", "Kernels", "MIN_INPUT_SIZE", "XLA_KERNELS",
           "create_model", "default_kernels", "get_kernels", "init_variables", "list_models", "resize"]
