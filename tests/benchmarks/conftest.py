"""Fixtures of the benchmark tests: a tiny CamVid in the SegNet layout (train/ trainannot/ val/ valannot/),
written once per session, and a two-convolution segmentation model that compiles in about a second."""
from __future__ import annotations

import pathlib

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from bisenet_jax.benchmarks.inference_speed import random_variables
from bisenet_jax.models import resize

HEIGHT, WIDTH = 48, 64  # 48 is not a multiple of 32, like CamVid's 360


def camvid_example(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An image of horizontal bands of 4 classes (sky, building, road, car) coloured by class, plus noise.

    The band borders move with the seed; the bottom-left corner is Unlabelled (11).
    """
    rng = np.random.default_rng(seed)
    classes = np.array([0, 1, 3, 8])
    colours = np.array([(128, 128, 128), (128, 0, 0), (128, 64, 128), (64, 0, 128)], np.float64)
    cuts = np.sort(rng.integers(6, HEIGHT - 6, 3))
    band = np.searchsorted(cuts, np.arange(HEIGHT), side="right")  # (H,) 0..3
    label = np.repeat(classes[band][:, None], WIDTH, axis=1).astype(np.uint8)
    label[-6:, :8] = 11
    image = colours[band][:, None, :].repeat(WIDTH, axis=1) + rng.normal(0, 12, (HEIGHT, WIDTH, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


@pytest.fixture(scope="session")
def tiny_camvid(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("camvid")
    for split, count, offset in (("train", 8, 0), ("val", 3, 100)):
        (root / split).mkdir()
        (root / f"{split}annot").mkdir()
        for i in range(count):
            image, label = camvid_example(offset + i)
            Image.fromarray(image).save(root / split / f"f{i:03d}.png")
            Image.fromarray(label).save(root / f"{split}annot" / f"f{i:03d}.png")
    return root


class TwoConvSegmenter(nn.Module):
    """3x3 stride-2 conv (3 -> 8 channels), ReLU, 3x3 conv to the classes, bilinear back to the input size.

    Like BiSeNet: NHWC float in, float32 logits at the input size out, ``train`` argument.
    """

    num_classes: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2))(x))  # (N, H/2, W/2, 8)
        h = nn.Conv(self.num_classes, (3, 3))(h)  # (N, H/2, W/2, num_classes)
        return resize(h.astype(jnp.float32), x.shape[1:3], "bilinear")


@pytest.fixture(scope="session")
def tiny_model():
    """(model, variables) with host-side random weights (no compiled ``model.init``)."""
    model = TwoConvSegmenter(4)
    return model, random_variables(model, (1, 32, 32, 3), seed=0)
