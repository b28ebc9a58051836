"""Training and evaluation transforms: records in, normalised float32 images and int32 labels out.

The training transform draws every random number of one example from the single generator grain
hands to `random_map`, and moves image and label through exactly the same geometry. It never
builds the full rescaled image: the crop window is mapped back to the source image and only that
region is resampled (PIL `resize(..., box=...)` samples the same pixel centres as resizing the
whole image and cropping), so its cost depends on the crop size, not on the scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import grain
import numpy as np
from PIL import Image, ImageStat

# ITU-R 601 luma weights, as PIL's RGB -> L conversion uses.
_GREY = np.array([0.299, 0.587, 0.114])


class Normalizer:
    """uint8 RGB (H, W, 3) -> float32 `(x / 255 - mean) / std`, with mean and std given after /255."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.offset = np.asarray(mean, np.float32) * 255.0
        self.scale = 1.0 / (np.asarray(std, np.float32) * 255.0)
        self._rows = {}  # width -> (offset, scale) tiled over one image row

    def __call__(self, image: np.ndarray) -> np.ndarray:
        height, width, _ = image.shape
        if width not in self._rows:
            self._rows[width] = (np.tile(self.offset, width), np.tile(self.scale, width))
        offset, scale = self._rows[width]
        # On (H, W*3) rows numpy runs long inner loops; broadcasting a (3,) vector over the last
        # axis of (H, W, 3) is several times slower.
        out = np.subtract(image.reshape(height, width * 3), offset, dtype=np.float32)
        return np.multiply(out, scale, out=out).reshape(height, width, 3)


class TrainTransform(grain.transforms.RandomMap):
    """Random scale, pad, crop, flip, colour jitter and normalisation of one record.

    Output: {"image": float32 (crop_h, crop_w, 3), "label": int32 (crop_h, crop_w)}. Where the
    rescaled image is smaller than the crop it is placed at a random offset; the padding is 0 in
    the normalised image (the dataset's mean colour) and `ignore_label` in the label.
    """

    def __init__(
        self,
        crop_size: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        ignore_label: int = 255,
        scale_range: Sequence[float] = (0.75, 2.0),
        scales: Sequence[float] = (),
        hflip: bool = True,
        color_jitter: float = 0.4,
    ):
        self.crop_size = _check_crop_size(crop_size)
        if len(scales) == 0 and (len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]):
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {tuple(scale_range)}.")
        if any(s <= 0 for s in scales):
            raise ValueError(f"scales must all be positive, got {tuple(scales)}.")
        if not 0 <= color_jitter < 1:
            raise ValueError(f"color_jitter must be in [0, 1), got {color_jitter}.")
        self.normalize = Normalizer(mean, std)
        self.ignore_label = int(ignore_label)
        self.scale_range = tuple(float(s) for s in scale_range)
        self.scales = tuple(float(s) for s in scales)
        self.hflip = bool(hflip)
        self.color_jitter = float(color_jitter)

    def random_map(self, record: dict, rng: np.random.Generator) -> dict:
        image, label = record["image"], record["label"]
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"Record {record.get('id', '?')}: image {image.shape[:2]} and label {label.shape} "
                "differ in size."
            )
        height, width = label.shape
        crop_h, crop_w = self.crop_size
        scale = rng.choice(self.scales) if self.scales else rng.uniform(*self.scale_range)
        scaled_h, scaled_w = max(1, round(height * scale)), max(1, round(width * scale))
        # Per axis: offset of the crop in the rescaled image (or of the image in the crop).
        src_y, dst_y, size_y = _place(rng, scaled_h, crop_h)
        src_x, dst_x, size_x = _place(rng, scaled_w, crop_w)
        box = (  # The crop window in source pixel coordinates.
            src_x * width / scaled_w,
            src_y * height / scaled_h,
            (src_x + size_x) * width / scaled_w,
            (src_y + size_y) * height / scaled_h,
        )
        image_crop = Image.fromarray(image).resize((size_x, size_y), Image.BILINEAR, box=box)
        label_crop = Image.fromarray(label).resize((size_x, size_y), Image.NEAREST, box=box)
        if self.color_jitter > 0:
            image_crop = self._jitter(image_crop, rng)
        if self.hflip and rng.random() < 0.5:
            image_crop = image_crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            label_crop = label_crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image_crop = self.normalize(np.ascontiguousarray(image_crop))  # (size_y, size_x, 3)
        label_crop = np.asarray(label_crop, np.int32)
        if (size_y, size_x) == (crop_h, crop_w):
            return {"image": image_crop, "label": label_crop}
        out_image = np.zeros((crop_h, crop_w, 3), np.float32)
        out_label = np.full((crop_h, crop_w), self.ignore_label, np.int32)
        window = (slice(dst_y, dst_y + size_y), slice(dst_x, dst_x + size_x))
        out_image[window] = image_crop
        out_label[window] = label_crop
        return {"image": out_image, "label": out_label}

    def _jitter(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Brightness, contrast and saturation by factors in [1 - j, 1 + j], in random order.

        The three are affine maps of RGB, so their composition is one 3x4 colour matrix that PIL
        applies in a single pass; values are clipped to [0, 255] once, at the end.
        """
        factors = rng.uniform(1 - self.color_jitter, 1 + self.color_jitter, size=3)
        order = rng.permutation(3)
        matrix = np.eye(3)  # x -> matrix @ x + offset, in 0-255 RGB
        offset = np.zeros(3)
        mean = np.asarray(ImageStat.Stat(image).mean)  # per-channel mean of the current image
        for op in order:
            f = factors[op]
            if op == 0:  # brightness: f * x
                step, shift = f * np.eye(3), np.zeros(3)
            elif op == 1:  # contrast: towards the mean grey level of the image
                step, shift = f * np.eye(3), (1 - f) * (_GREY @ mean) * np.ones(3)
            else:  # saturation: towards each pixel's own grey level
                step, shift = f * np.eye(3) + (1 - f) * np.outer(np.ones(3), _GREY), np.zeros(3)
            matrix, offset = step @ matrix, step @ offset + shift
            mean = step @ mean + shift
        return image.convert("RGB", tuple(np.concatenate([matrix, offset[:, None]], 1).ravel()))


class EvalTransform(grain.transforms.Map):
    """Normalisation only, at the original size: {"image": float32 (H, W, 3), "label": int32 (H, W), "id"}."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.normalize = Normalizer(mean, std)

    def map(self, record: dict) -> dict:
        return {
            "image": self.normalize(record["image"]),
            "label": record["label"].astype(np.int32),
            "id": record["id"],
        }


def _place(rng: np.random.Generator, scaled: int, crop: int) -> tuple[int, int, int]:
    """(offset in the rescaled image, offset in the crop, length) of the visible part on one axis."""
    if scaled >= crop:
        return int(rng.integers(0, scaled - crop + 1)), 0, crop
    return 0, int(rng.integers(0, crop - scaled + 1)), scaled


def _check_crop_size(crop_size: Sequence[int]) -> tuple[int, int]:
    if len(crop_size) != 2 or min(crop_size) < 1:
        raise ValueError(f"crop_size must be (height, width) with positive sizes, got {tuple(crop_size)}.")
    return int(crop_size[0]), int(crop_size[1])
