"""Fixtures for the data tests: tiny datasets written in each dataset's official layout.

`files` bundles the helpers that write image and label files and `data_config` builds data configs
(tests run with --import-mode=importlib, so helpers are shared through fixtures, not an import). The real CamVid
fixture (`camvid_root`, skipping with a reason when absent, BISENET_CAMVID_ROOT override) comes
from tests/conftest.py.
"""

from __future__ import annotations

import pathlib
import types

import numpy as np
import pytest
from PIL import Image

from bisenet_jax.data import default_data_config

HEIGHT, WIDTH = 6, 8  # Small, and H != W so transposed sizes are caught.


def write_image(path: pathlib.Path, array: np.ndarray, mode: str | None = None) -> pathlib.Path:
    """Writes uint8 `array` as an image file (format from the suffix); creates parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(array, np.uint8))
    if mode is not None:
        image = image.convert(mode)
    image.save(path)
    return path


def random_image(seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def label_with(values, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A (height, width) uint8 label holding `values` in raster order, the rest filled with values[0]."""
    values = np.asarray(values, np.uint8).reshape(-1)
    label = np.full(height * width, values[0], np.uint8)
    label[: len(values)] = values
    return label.reshape(height, width)


@pytest.fixture
def files():
    """write_image(path, array, mode=None), random_image(seed, h, w), label_with(values), HEIGHT, WIDTH."""
    return types.SimpleNamespace(
        write_image=write_image, random_image=random_image, label_with=label_with, HEIGHT=HEIGHT, WIDTH=WIDTH
    )


def make_data_config(name: str, root="", **fields):
    """default_data_config() for kind `name`; a dict value updates that kind's sub-config
    (custom={"num_classes": 3}), any other value sets the field (strict=True)."""
    config = default_data_config()
    config.name, config.root = name, str(root)
    for key, value in fields.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


@pytest.fixture
def data_config():
    """make_data_config(name, root="", **fields): a full data config with a few fields changed."""
    return make_data_config


@pytest.fixture
def cityscapes_root(tmp_path):
    """Cityscapes layout: train has 2 cities x 1 image (the first label holds every labelId 0..33), val 1."""
    root = tmp_path / "cityscapes"
    frames = {"train": [("aachen", 0), ("bochum", 1)], "val": [("frankfurt", 2)]}
    for split, items in frames.items():
        for city, seed in items:
            base = f"{city}_000000_{seed:06d}"
            write_image(root / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png", random_image(seed))
            ids = list(range(34)) if seed == 0 else [7, 8, 26]
            write_image(root / "gtFine" / split / city / f"{base}_gtFine_labelIds.png", label_with(ids))
            write_image(root / "gtFine" / split / city / f"{base}_gtFine_labelTrainIds.png", label_with([0, 1, 13, 255]))
            write_image(root / "gtFine" / split / city / f"{base}_gtFine_color.png", random_image(99))
    return root


@pytest.fixture
def camvid_generated_root(tmp_path):
    """SegNet CamVid layout with train (3 images) and val (2), folders and /SegNet/CamVid/ list files."""
    root = tmp_path / "CamVid"
    for split, count in (("train", 3), ("val", 2)):
        lines = []
        for i in range(count):
            name = f"0001TP_{split}_{i:03d}.png"
            write_image(root / split / name, random_image(i))
            write_image(root / f"{split}annot" / name, label_with([i, 10, 11, 3]))
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def coco_stuff_root(tmp_path):
    """COCO-Stuff-164k layout: 2 train and 1 val JPEG images with stuffthingmaps labels."""
    root = tmp_path / "cocostuff"
    for folder, names in (("train2017", ["000000000009", "000000000025"]), ("val2017", ["000000000139"])):
        for i, name in enumerate(names):
            write_image(root / "images" / folder / f"{name}.jpg", random_image(i))
            write_image(root / "stuffthingmaps_trainval2017" / folder / f"{name}.png", label_with([0, 12, 91, 181, 255]))
    return root


@pytest.fixture
def ade20k_root(tmp_path):
    """ADEChallengeData2016 layout (inside a parent folder): 2 training and 1 validation image."""
    root = tmp_path / "ade" / "ADEChallengeData2016"
    for folder, prefix, count in (("training", "ADE_train", 2), ("validation", "ADE_val", 1)):
        for i in range(count):
            name = f"{prefix}_{i + 1:08d}"
            write_image(root / "images" / folder / f"{name}.jpg", random_image(i))
            write_image(root / "annotations" / folder / f"{name}.png", label_with([0, 1, 150, 75]))
    return root
