"""A tiny CamVid in the SegNet layout (train/ trainannot/ val/ valannot/), written once per session."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
from PIL import Image

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
