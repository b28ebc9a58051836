"""Fixtures for the conversion tests: JAX logits, the reference key layouts (the random variables with
non-trivial BN statistics are tests/conftest.py's, shared with the export tests)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bisenet_jax.models import create_model


@functools.lru_cache(maxsize=None)
def _jitted_apply(model_name: str, num_classes: int):
    model = create_model(model_name, num_classes)
    return jax.jit(lambda variables, x: model.apply(variables, x, train=False))


def jax_eval_logits(model_name: str, variables, images_nhwc: np.ndarray) -> np.ndarray:
    """Eval-mode logits (N, H, W, C) of the JAX model (one compilation per model and shape)."""
    num_classes = int(variables["params"]["conv_out"]["conv_out"]["kernel"].shape[-1]
                      if model_name.startswith("bisenetv1") else
                      variables["params"]["head"]["conv_out"]["1"]["kernel"].shape[-1])
    return np.asarray(_jitted_apply(model_name, num_classes)(variables, jnp.asarray(images_nhwc)))


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|: the parity measure of the golden tests."""
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def read_reference_shapes(reference_dir, version: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in open(reference_dir / f"pytorch_bisenet{version}_state_dict.txt"):
        if line.strip() and not line.startswith("#"):
            key, shape = line.rstrip("\n").split("\t")
            out[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


@pytest.fixture
def reference_shapes(reference_dir):
    return functools.partial(read_reference_shapes, reference_dir)


@pytest.fixture
def jax_logits():
    return jax_eval_logits


@pytest.fixture
def rel_error():
    return relative_error
