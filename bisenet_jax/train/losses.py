"""Segmentation losses: pixel-wise cross-entropy and OHEM cross-entropy, both with an ignore label.

Losses are computed in float32 whatever the compute dtype of the logits (in float64 for a float64
model). OHEM's k-th largest loss comes from a :class:`~bisenet_jax.models.kernels.Kernels` bundle
(``kernels``: "auto", "cpu", "xla" or a bundle); pass the model's ``kernels`` so that model and loss
make one choice.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from bisenet_jax.models.kernels import Kernels, get_kernels


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array, ignore_label: int) -> tuple[jax.Array, jax.Array]:
    """Per-pixel CE, (N, H, W); ignored pixels get 0. Also returns the valid mask.

    Labels outside [0, num_classes) that are not ``ignore_label`` must have been mapped by the
    data pipeline; here they are treated as ignored so they can never produce NaNs.
    """
    num_classes = logits.shape[-1]
    valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
    safe_labels = jnp.where(valid, labels, 0)
    dtype = jnp.promote_types(logits.dtype, jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(dtype), safe_labels)
    return jnp.where(valid, losses, 0.0), valid


def cross_entropy(logits: jax.Array, labels: jax.Array, ignore_label: int = 255) -> jax.Array:
    """Mean CE over valid pixels (0 when every pixel is ignored)."""
    losses, valid = pixel_cross_entropy(logits, labels, ignore_label)
    return losses.sum() / jnp.maximum(valid.sum(), 1)


def ohem_cross_entropy(logits: jax.Array, labels: jax.Array, ignore_label: int = 255, thresh: float = 0.7,
                       min_kept_divisor: int = 16, kernels: str | Kernels = "auto") -> jax.Array:
    """OHEM CE as the PyTorch BiSeNet implementations use it.

    Pixels whose loss exceeds ``-ln(thresh)`` are averaged; if fewer than
    ``n_min = n_valid // min_kept_divisor`` pass, the
    ``n_min`` largest losses are averaged instead. Ignored pixels count as loss 0, as in PyTorch.
    ``kernels`` finds the ``n_min``-th largest loss (see the module docstring).
    """
    losses, valid = pixel_cross_entropy(logits, labels, ignore_label)
    losses = losses.reshape(-1)
    loss_thresh = -math.log(thresh)
    n_valid = valid.sum()
    n_min = n_valid // min_kept_divisor
    hard = losses > loss_thresh
    n_hard = hard.sum()

    def mean_of_hard(_):
        return jnp.where(hard, losses, 0.0).sum() / jnp.maximum(n_hard, 1)

    def mean_of_top_n_min(_):
        return sum_of_top_k(losses, n_min, kernels) / jnp.maximum(n_min, 1)

    return jax.lax.cond(n_hard >= n_min, mean_of_hard, mean_of_top_n_min, None)


def sum_of_top_k(values: jax.Array, k: jax.Array, kernels: str | Kernels = "auto") -> jax.Array:
    """Sum of the ``k`` largest of the non-negative ``values`` (1-D, float32 or float64); ``k`` may be traced.

    The k-th largest value is ``kernels.kth_largest`` (a sort, or on CPU a bisection; neither is
    differentiated). Values tied with it share the remaining weight, so the sum and its gradient
    equal those of a sort (up to which tied element is credited).
    """
    selected = jax.lax.stop_gradient(values).astype(jnp.float32)  # float64 values are selected in float32
    kth = get_kernels(kernels).kth_largest(selected, k)
    above, tied = selected > kth, selected == kth
    n_above, n_tied = jnp.sum(above), jnp.sum(tied)
    tie_weight = (k - n_above).astype(jnp.float32) / jnp.maximum(n_tied, 1).astype(jnp.float32)
    weights = jnp.where(above, 1.0, jnp.where(tied, tie_weight, 0.0))
    return jnp.sum(values * jax.lax.stop_gradient(weights))


def segmentation_loss(logits: jax.Array, aux_logits: Sequence[jax.Array], labels: jax.Array, *,
                      name: str = "ohem", ignore_label: int = 255, aux_weight: float = 1.0,
                      ohem_thresh: float = 0.7, kernels: str | Kernels = "auto"
                      ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss = loss(main) + aux_weight * sum(loss(aux_i)); returns (total, every term).

    ``kernels`` computes OHEM's k-th largest loss (see the module docstring).
    """
    if name == "ohem":
        kernels = get_kernels(kernels)
        fn = lambda lg: ohem_cross_entropy(lg, labels, ignore_label, ohem_thresh, kernels=kernels)
    elif name == "ce":
        fn = lambda lg: cross_entropy(lg, labels, ignore_label)
    else:
        raise ValueError(f"unknown loss {name!r}; expected 'ohem' or 'ce'")
    terms = {"loss_main": fn(logits)}
    for i, aux in enumerate(aux_logits):
        terms[f"loss_aux{i + 1}"] = fn(aux)
    total = terms["loss_main"] + aux_weight * sum(terms[k] for k in terms if k != "loss_main")
    return total, terms
