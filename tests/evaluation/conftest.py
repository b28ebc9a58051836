"""Fixtures of the evaluation tests: a tiny segmentation model (compiles in about a second) and small
images. ``multiprocess_eval.py`` imports this file for the same model."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from bisenet_jax.benchmarks.inference_speed import random_variables
from bisenet_jax.models import resize


class TinySegmenter(nn.Module):
    """Stride-2 conv, global context (so padding changes the output), conv to classes, bilinear up.

    Like BiSeNet: NHWC float in, float32 logits at the input size out, ``train`` argument.
    """

    num_classes: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2))(x))
        h = h + jnp.mean(h, axis=(1, 2), keepdims=True)
        h = nn.Conv(self.num_classes, (3, 3))(h)
        return resize(h.astype(jnp.float32), x.shape[1:3], "bilinear")


def tiny_model_and_variables():
    """(model, variables), deterministic. Host-side random weights: compiling model.init takes
    seconds on a loaded 2-core machine."""
    model = TinySegmenter(4)
    variables = random_variables(model, (1, 32, 32, 3), seed=0)
    variables["params"]["Conv_1"]["bias"] = np.array([0.3, -0.2, 0.1, 0.0], np.float32)
    return model, variables


@pytest.fixture(scope="session")
def tiny_model():
    return tiny_model_and_variables()


@pytest.fixture(scope="session")
def tiny_images():
    return np.random.default_rng(1).standard_normal((2, 48, 64, 3)).astype(np.float32)
