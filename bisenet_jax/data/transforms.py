"""Training and evaluation transforms: records in, normalised float32 images and int32 labels out.

The training transform draws every random number of one example from the single generator grain
hands to `random_map` (`TrainTransform.sample`), then moves image and label through exactly the
same geometry (`TrainTransform.apply`). It never builds the full rescaled image: the crop window is
mapped back to the source image and only that region is resampled (PIL `resize(..., box=...)`
samples the same pixel centres as resizing the whole image and cropping), so its cost depends on
the crop size, not on the scale. `TrainBatcher` applies the drawn augmentations straight into the
batch arrays (in shared memory when worker processes produce them), so a batch is written once and
never stacked or copied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import grain
import numpy as np
from grain.multiprocessing import SharedMemoryArray
from PIL import Image, ImageStat

# ITU-R 601 luma weights, as PIL's RGB -> L conversion uses.
_GREY = np.array([0.299, 0.587, 0.114])


class Normalizer:
    """uint8 RGB (H, W, 3) -> float32 `(x / 255 - mean) / std`, with mean and std given after /255."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.offset = np.asarray(mean, np.float32) * 255.0
        self.scale = 1.0 / (np.asarray(std, np.float32) * 255.0)
        self._rows = {}  # width -> (offset, scale) tiled over one image row

    def __call__(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Normalises `image`; into `out` (any float32 (H, W, 3) view with unit channel stride) if given."""
        height, width, _ = image.shape
        if width not in self._rows:
            self._rows[width] = (np.tile(self.offset, width), np.tile(self.scale, width))
        offset, scale = self._rows[width]
        if out is None:
            out = np.empty((height, width, 3), np.float32)
        # As (H, W*3) rows numpy runs long inner loops; broadcasting a (3,) vector over the last
        # axis of (H, W, 3) is several times slower.
        rows = _as_rows(out)
        np.subtract(np.ascontiguousarray(image).reshape(height, width * 3), offset, out=rows, dtype=np.float32)
        np.multiply(rows, scale, out=rows)
        return out


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The random choices for one training example (see `TrainTransform.sample`)."""

    box: tuple[float, float, float, float]  # crop window in source pixels (left, top, right, bottom)
    size: tuple[int, int]  # (height, width) the window is resampled to
    offset: tuple[int, int]  # (y, x) where it lands in the crop; the rest is padding
    flip: bool
    jitter: tuple[float, float, float] | None  # brightness, contrast, saturation factors


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
        return self.apply(record, self.sample(record, rng))

    def sample(self, record: dict, rng: np.random.Generator) -> Augmentation:
        """Draws scale, crop / pad offsets, flip and jitter for `record`, all from `rng`."""
        image, label = record["image"], record["label"]
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"Record {record.get('id', '?')}: image {image.shape[:2]} and label {label.shape} "
                "differ in size."
            )
        height, width = label.shape
        scale = rng.choice(self.scales) if self.scales else rng.uniform(*self.scale_range)
        scaled_h, scaled_w = max(1, round(height * scale)), max(1, round(width * scale))
        # Per axis: offset of the crop in the rescaled image (or of the image in the crop).
        src_y, dst_y, size_y = _place(rng, scaled_h, self.crop_size[0])
        src_x, dst_x, size_x = _place(rng, scaled_w, self.crop_size[1])
        box = (
            src_x * width / scaled_w,
            src_y * height / scaled_h,
            (src_x + size_x) * width / scaled_w,
            (src_y + size_y) * height / scaled_h,
        )
        flip = self.hflip and bool(rng.random() < 0.5)
        jitter = None
        if self.color_jitter > 0:
            jitter = tuple(rng.uniform(1 - self.color_jitter, 1 + self.color_jitter, size=3).tolist())
        return Augmentation(box, (size_y, size_x), (dst_y, dst_x), flip, jitter)

    def apply(
        self,
        record: dict,
        augmentation: Augmentation,
        out_image: np.ndarray | None = None,
        out_label: np.ndarray | None = None,
    ) -> dict:
        """Applies drawn augmentations; writes into `out_image` / `out_label` (crop-sized) if given."""
        crop_h, crop_w = self.crop_size
        if out_image is None:
            out_image = np.empty((crop_h, crop_w, 3), np.float32)
        if out_label is None:
            out_label = np.empty((crop_h, crop_w), np.int32)
        (size_y, size_x), (dst_y, dst_x) = augmentation.size, augmentation.offset
        image = Image.fromarray(record["image"]).resize((size_x, size_y), Image.BILINEAR, box=augmentation.box)
        label = Image.fromarray(record["label"]).resize((size_x, size_y), Image.NEAREST, box=augmentation.box)
        if augmentation.jitter is not None:
            image = _jitter(image, *augmentation.jitter)
        if augmentation.flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            label = label.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        window = (slice(dst_y, dst_y + size_y), slice(dst_x, dst_x + size_x))
        if (size_y, size_x) != (crop_h, crop_w):
            out_image.fill(0.0)
            out_label.fill(self.ignore_label)
        self.normalize(np.asarray(image), out=out_image[window])
        out_label[window] = np.asarray(label)
        return {"image": out_image, "label": out_label}


def _jitter(image: Image.Image, brightness: float, contrast: float, saturation: float) -> Image.Image:
    """Brightness, contrast and saturation as PIL's ImageEnhance defines them, in one pass.

    Brightness scales towards black, contrast blends with the image's mean grey level, saturation
    with each pixel's grey level. All three are affine maps of RGB that commute (none changes
    another's reference grey), so a random order would change nothing; composed, they are one
    3x4 colour matrix that PIL applies in a single pass, clipping to [0, 255] once at the end.
    """
    mean_grey = _GREY @ np.asarray(ImageStat.Stat(image).mean)
    # Saturation: s * x + (1 - s) * grey(x); then contrast and brightness scale it and add a grey
    # offset: b * (c * x' + (1 - c) * mean_grey).
    matrix = brightness * contrast * (saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), _GREY))
    offset = np.full(3, brightness * (1 - contrast) * mean_grey)
    return image.convert("RGB", tuple(np.concatenate([matrix, offset[:, None]], 1).ravel()))


class SampleAugmentation(grain.transforms.RandomMap):
    """record -> {"record", "augmentation"}: the example's random choices, drawn from its own RNG."""

    def __init__(self, transform: TrainTransform):
        self.transform = transform

    def random_map(self, record: dict, rng: np.random.Generator) -> dict:
        return {"record": record, "augmentation": self.transform.sample(record, rng)}


class TrainBatcher:
    """grain batch_fn: applies each example's drawn augmentation directly into the batch arrays.

    With `shared_memory` the arrays are grain SharedMemoryArrays, which worker processes hand to
    the training process without a copy.
    """

    def __init__(self, transform: TrainTransform, shared_memory: bool = False):
        self.transform = transform
        self.shared_memory = shared_memory

    def enable_shared_memory_output(self) -> None:
        self.shared_memory = True

    def __call__(self, examples: Sequence[dict]) -> dict:
        crop_h, crop_w = self.transform.crop_size
        allocate = SharedMemoryArray if self.shared_memory else np.empty
        images = allocate((len(examples), crop_h, crop_w, 3), np.float32)  # (B, h, w, 3)
        labels = allocate((len(examples), crop_h, crop_w), np.int32)  # (B, h, w)
        for i, example in enumerate(examples):
            self.transform.apply(example["record"], example["augmentation"], images[i], labels[i])
        return {"image": images, "label": labels}


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


def _as_rows(array: np.ndarray) -> np.ndarray:
    """A (H, W, 3) view with unit channel stride as a (H, W*3) view of the same memory."""
    height, width, channels = array.shape
    row_stride, pixel_stride, channel_stride = array.strides
    if pixel_stride != channels * channel_stride:
        raise ValueError(f"expected packed pixels, got strides {array.strides} for shape {array.shape}")
    return np.lib.stride_tricks.as_strided(
        array, (height, width * channels), (row_stride, channel_stride), writeable=True
    )


def _place(rng: np.random.Generator, scaled: int, crop: int) -> tuple[int, int, int]:
    """(offset in the rescaled image, offset in the crop, length) of the visible part on one axis."""
    if scaled >= crop:
        return int(rng.integers(0, scaled - crop + 1)), 0, crop
    return 0, int(rng.integers(0, crop - scaled + 1)), scaled


def _check_crop_size(crop_size: Sequence[int]) -> tuple[int, int]:
    if len(crop_size) != 2 or min(crop_size) < 1:
        raise ValueError(f"crop_size must be (height, width) with positive sizes, got {tuple(crop_size)}.")
    return int(crop_size[0]), int(crop_size[1])
