"""The embedded demo dataset: procedurally generated shape scenes, no download needed.

Each scene is a textured background (colour gradient, stripes, blotchy low-frequency noise, pixel
noise) with 2-6 shapes drawn over each other: disks, rotated boxes, triangles and rings. Every class
has a characteristic but noisy colour and texture, so a small BiSeNet learns it in minutes on a CPU,
while shape boundaries, occlusion and the scale augmentation still make it a segmentation task.

Examples are generated on the fly in `__getitem__` from `np.random.default_rng((seed, split, index))`:
the same (seed, split, index) always gives the same image, in any process, in any order.

config.data.demo: seed, num_train, num_val, image_size (height, width).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from bisenet_jax.data.info import DatasetInfo
from bisenet_jax.data.reader import DatasetKind

CLASS_NAMES = ("background", "disk", "box", "triangle", "ring")
# Colours for visualising predictions (not the colours the shapes are drawn with).
PALETTE = np.array(
    [(70, 70, 70), (220, 20, 60), (0, 170, 80), (40, 90, 230), (250, 190, 30)], np.uint8
)
IGNORE_LABEL = 255
# Per-channel RGB mean and std after /255, measured with `measure_mean_std(DemoSource("train"))`
# over the first 500 training images at the default size and seed.
MEAN = (0.5107, 0.4831, 0.4405)
STD = (0.2073, 0.1798, 0.1875)

SPLITS = {"train": 0, "val": 1}
NUM_EXAMPLES = {"train": 2000, "val": 200}  # Split sizes unless given.
IMAGE_SIZE = (120, 160)  # (height, width); 120 is deliberately not a multiple of 32.
# Base RGB colour of each shape class; every shape instance shifts it by up to +-_COLOUR_JITTER.
_BASE_COLOURS = np.array(
    [(0, 0, 0), (205, 55, 50), (55, 165, 75), (55, 85, 205), (225, 190, 55)], np.float32
)
_COLOUR_JITTER = 35.0

INFO = DatasetInfo(
    name="demo",
    class_names=CLASS_NAMES,
    num_classes=len(CLASS_NAMES),
    palette=PALETTE,
    mean=MEAN,
    std=STD,
    ignore_label=IGNORE_LABEL,
)


class DemoSource:
    """Random-access source of demo scenes: `{"image": uint8 (H, W, 3), "label": uint8 (H, W), "id"}`."""

    def __init__(
        self,
        split: str = "train",
        num_examples: int | None = None,
        image_size: tuple[int, int] = IMAGE_SIZE,
        seed: int = 0,
    ):
        if split not in SPLITS:
            raise ValueError(f"Demo dataset split {split!r} does not exist; use one of {sorted(SPLITS)}.")
        if num_examples is None:
            num_examples = NUM_EXAMPLES[split]
        height, width = (int(s) for s in image_size)
        if num_examples < 1 or min(height, width) < 16:
            raise ValueError(
                f"Demo dataset needs num_examples >= 1 and an image size of at least 16x16, got "
                f"num_examples={num_examples}, image_size={tuple(image_size)}."
            )
        self.split = split
        self.num_examples = int(num_examples)
        self.image_size = (height, width)
        self.seed = int(seed)
        self.info = INFO

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < self.num_examples:
            raise IndexError(f"Demo {self.split} index {index} out of range [0, {self.num_examples}).")
        rng = np.random.default_rng((self.seed, SPLITS[self.split], index))
        image, label = render_scene(rng, *self.image_size)
        return {"image": image, "label": label, "id": f"demo_{self.split}_{index:05d}"}

    def __repr__(self) -> str:
        return (
            f"DemoSource(split={self.split!r}, num_examples={self.num_examples}, "
            f"image_size={self.image_size}, seed={self.seed})"
        )


def render_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws one scene: uint8 image (H, W, 3) and uint8 label (H, W) of the visible class per pixel."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = _background(rng, yy, xx)
    label = np.zeros((height, width), np.uint8)
    size = min(height, width)
    for _ in range(rng.integers(2, 7)):
        cls = int(rng.integers(1, len(CLASS_NAMES)))
        radius = rng.uniform(0.14, 0.32) * size
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        mask = _SHAPES[cls](rng, yy - cy, xx - cx, radius)
        image[mask] = _shape_pixels(rng, cls, yy[mask] - cy, xx[mask] - cx, radius)
        label[mask] = cls
    image += rng.normal(0.0, 8.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), label


def _background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Low-saturation gradient + stripes + blotches, float32 (H, W, 3) in [0, 255]."""
    height, width = yy.shape
    grey = rng.uniform(60, 190, size=(2, 1))
    colours = grey + rng.uniform(-20, 20, size=(2, 3))  # Two greyish colours to blend between.
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1.0) / 2.0  # (H, W) in [0, 1]
    image = colours[0] + (colours[1] - colours[0]) * t[..., None]
    stripe_angle, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
    phase = (np.cos(stripe_angle) * xx + np.sin(stripe_angle) * yy) * (2 * np.pi / period)
    image += (rng.uniform(0, 18) * np.sin(phase))[..., None]
    cell = 8  # Blotches: coarse noise upsampled by pixel repetition, then smoothed a little.
    coarse = rng.normal(0.0, 14.0, size=(height // cell + 2, width // cell + 2, 1)).astype(np.float32)
    blotches = np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)[:height, :width]
    image += (blotches + np.roll(blotches, cell // 2, axis=0) + np.roll(blotches, cell // 2, axis=1)) / 3
    return image.astype(np.float32)


def _disk(rng, dy, dx, radius):
    return dy * dy + dx * dx <= radius * radius


def _box(rng, dy, dx, radius):
    half_h, half_w = radius * rng.uniform(0.55, 1.0, size=2)
    angle = rng.uniform(0, np.pi)
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    return (np.abs(u) <= half_w) & (np.abs(v) <= half_h)


def _triangle(rng, dy, dx, radius):
    angles = rng.uniform(0, 2 * np.pi) + np.arange(3) * (2 * np.pi / 3) + rng.uniform(-0.3, 0.3, 3)
    ys, xs = radius * np.sin(angles), radius * np.cos(angles)
    inside = np.ones(dy.shape, bool)
    for i in range(3):  # Inside = on the same side of every edge as the centroid (0, 0).
        j = (i + 1) % 3
        edge = (xs[j] - xs[i]) * (dy - ys[i]) - (ys[j] - ys[i]) * (dx - xs[i])
        centroid_side = (xs[j] - xs[i]) * (0 - ys[i]) - (ys[j] - ys[i]) * (0 - xs[i])
        inside &= edge * centroid_side >= 0
    return inside


def _ring(rng, dy, dx, radius):
    r2 = dy * dy + dx * dx
    inner = radius * rng.uniform(0.45, 0.6)
    return (r2 <= radius * radius) & (r2 >= inner * inner)


_SHAPES = {1: _disk, 2: _box, 3: _triangle, 4: _ring}


def _shape_pixels(rng, cls: int, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    """Colours (N, 3) for the N pixels of one shape: jittered class colour plus a class texture."""
    colour = _BASE_COLOURS[cls] + rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, 3)
    shade = rng.uniform(0.8, 1.15)
    if cls == 1:  # Disk: lit from one side.
        light = rng.uniform(0, 2 * np.pi)
        texture = 25.0 * (np.cos(light) * dx + np.sin(light) * dy) / radius
    elif cls == 2:  # Box: fine stripes.
        texture = 15.0 * np.sign(np.sin(dx * rng.uniform(0.6, 1.2)))
    elif cls == 3:  # Triangle: speckles.
        texture = rng.normal(0.0, 14.0, dy.shape)
    else:  # Ring: concentric waves.
        texture = 12.0 * np.sin(np.sqrt(dy * dy + dx * dx) * 1.5)
    return (colour * shade)[None, :] + texture[:, None]


def measure_mean_std(source, num_examples: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of `source` images after /255, over its first `num_examples`."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for i in range(min(num_examples, len(source))):
        pixels = source[i]["image"].reshape(-1, 3).astype(np.float64) / 255.0
        total += pixels.sum(0)
        total_sq += (pixels * pixels).sum(0)
        count += len(pixels)
    mean = total / count
    return mean, np.sqrt(total_sq / count - mean * mean)


def default_config() -> ml_collections.ConfigDict:
    """config.data.demo."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.num_train = NUM_EXAMPLES["train"]
    config.num_val = NUM_EXAMPLES["val"]
    config.image_size = IMAGE_SIZE
    return config


def open_source(data_config: Any, split: str) -> DemoSource:
    options = data_config.demo
    sizes = {"train": options.num_train, "val": options.num_val}
    return DemoSource(split, sizes.get(split), tuple(options.image_size), seed=options.seed)


KIND = DatasetKind("demo", open_source, info=INFO, default_config=default_config)
