"""Fixtures for the conversion tests: random variables with non-trivial BN statistics, JAX logits,
the reference key layouts."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from bisenet_jax.convert import model_template
from bisenet_jax.models import create_model


def make_random_variables(model_name: str, num_classes: int = 19, seed: int = 0, aux_heads: bool = True) -> dict:
    """Variables of ``model_name`` drawn in numpy from the shapes alone (no slow ``init``).

    Kernels are He-normal (fan_out); BN scales, shifts and running statistics are randomised so that no
    BatchNorm is the identity (a transposed or misplaced statistic would show in the logits).
    """
    rng = np.random.default_rng(seed)
    template = model_template(model_name, num_classes, aux_heads)

    def draw(path, shape):
        if path[-1] == "kernel":  # He normal over fan_out, the models' own init (HWIO: kh * kw * out)
            return rng.standard_normal(shape) * np.sqrt(2.0 / (shape[0] * shape[1] * shape[3]))
        if path[-1] == "scale":
            return 1.0 + 0.2 * rng.standard_normal(shape)
        if path[-1] in ("bias", "mean"):
            return 0.1 * rng.standard_normal(shape)
        if path[-1] == "var":
            return 0.5 + rng.random(shape)
        raise AssertionError(path)

    return {collection: traverse_util.unflatten_dict(
        {path: draw(path, leaf.shape).astype(np.float32)
         for path, leaf in traverse_util.flatten_dict(template[collection]).items()})
        for collection in ("params", "batch_stats")}


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
def random_variables():
    return make_random_variables


@pytest.fixture
def reference_shapes(reference_dir):
    return functools.partial(read_reference_shapes, reference_dir)


@pytest.fixture
def jax_logits():
    return jax_eval_logits


@pytest.fixture
def rel_error():
    return relative_error
