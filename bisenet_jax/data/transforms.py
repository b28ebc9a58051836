"""Training and evaluation transforms: records in, normalised float32 images and int32 labels out.

The training transform draws every random number of one example from the single generator grain
hands to `random_map` (`TrainTransform.sample`), then moves image and label through exactly the
same geometry (`TrainTransform.apply`). It never builds the full rescaled image: the crop window is
mapped back to the source image, snapped to whole source pixels, and only that window is resampled
to the crop with OpenCV, so the cost depends on the crop size, not on the scale. Resampling uses
half-pixel centres for both: output pixel (y, x) of a window (left, top, right, bottom) resized to
(h, w) samples the source at
    u = left + (x + 0.5) * (right - left) / w - 0.5,   v = top + (y + 0.5) * (bottom - top) / h - 0.5
bilinearly for the image (cv2.INTER_LINEAR, neighbours clamped to the window) and as the source
pixel containing (u + 0.5, v + 0.5) for the label (cv2.INTER_NEAREST_EXACT; plain INTER_NEAREST
samples floor(x * scale), half a source pixel off the image's grid). Like OpenCV's resize, and
unlike PIL's, downscaling does not widen the bilinear kernel (scales down to 0.75 by default).
`TrainBatcher` applies the drawn augmentations straight into the batch arrays (in shared memory
when worker processes produce them), so a batch is written once and never stacked or copied.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import grain
import numpy as np
from grain.multiprocessing import SharedMemoryArray

from bisenet_jax.data.decode import opencv

# ITU-R 601 luma weights, as PIL's RGB -> L conversion uses.
_GREY = np.array([0.299, 0.587, 0.114])


class Normalizer:
    """uint8 RGB (H, W, 3) -> float32 `(x / 255 - mean) / std`, with mean and std given after /255.

    A 256-entry float32 table per channel, applied by cv2.LUT in one pass (reads the uint8 image
    once, writes the output once); the table holds `(x - 255 mean) * 1 / (255 std)` computed in
    float32, the values the elementwise formula gives.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        offset = np.asarray(mean, np.float32) * np.float32(255.0)
        scale = np.float32(1.0) / (np.asarray(std, np.float32) * np.float32(255.0))
        values = np.arange(256, dtype=np.float32)[:, None]
        self.table = np.ascontiguousarray(((values - offset) * scale).reshape(1, 256, 3))

    def __call__(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Normalises `image`; into `out` (any float32 (H, W, 3) view with packed pixels) if given."""
        if out is None:
            out = np.empty(image.shape, np.float32)
        result = opencv().LUT(image, self.table, dst=out)
        if result is not out:  # OpenCV allocated instead of writing in place: copy (not expected).
            np.copyto(out, result)
        return out


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The random choices for one training example (see `TrainTransform.sample`)."""

    box: tuple[int, int, int, int]  # window of whole source pixels (left, top, right, bottom), end exclusive
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
        # The window in source pixels, snapped to whole pixels (so it is a plain slice): its ends
        # move by at most half a source pixel, the scale by under 0.5 / window length.
        left, right = _snap(src_x * width / scaled_w, (src_x + size_x) * width / scaled_w, width)
        top, bottom = _snap(src_y * height / scaled_h, (src_y + size_y) * height / scaled_h, height)
        box = (left, top, right, bottom)
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
        cv2 = opencv()
        (size_y, size_x), (dst_y, dst_x) = augmentation.size, augmentation.offset
        left, top, right, bottom = augmentation.box
        image = record["image"][top:bottom, left:right]
        label = record["label"][top:bottom, left:right]
        if image.shape[:2] != (size_y, size_x):
            image = cv2.resize(image, (size_x, size_y), interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, (size_x, size_y), interpolation=cv2.INTER_NEAREST_EXACT)
        if augmentation.jitter is not None:
            image = _jitter(image, *augmentation.jitter)
        if augmentation.flip:
            # Flip the uint8 crop (0.1 ms at 1024x1024): normalising from a reversed view costs ms more.
            image = cv2.flip(image, 1)
            label = cv2.flip(label, 1)
        window = (slice(dst_y, dst_y + size_y), slice(dst_x, dst_x + size_x))
        if (size_y, size_x) != (crop_h, crop_w):
            out_image.fill(0.0)
            out_label.fill(self.ignore_label)
        self.normalize(image, out=out_image[window])
        out_label[window] = label
        return {"image": out_image, "label": out_label}


def _jitter(image: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """Brightness, contrast and saturation as PIL's ImageEnhance defines them, in one pass.

    uint8 (H, W, 3) RGB in and out. Brightness scales towards black, contrast blends with the
    image's mean grey level, saturation with each pixel's grey level. All three are affine maps of
    RGB that commute (none changes another's reference grey), so a random order would change
    nothing; composed, they are one 3x4 colour matrix that cv2.transform applies in a single pass,
    clipping to [0, 255] once at the end. For uint8 OpenCV rounds with 10-bit fixed-point
    coefficients, so a value can be one level off the exactly rounded one.
    """
    cv2 = opencv()
    mean_grey = _GREY @ np.asarray(cv2.mean(image)[:3])
    # Saturation: s * x + (1 - s) * grey(x); then contrast and brightness scale it and add a grey
    # offset: b * (c * x' + (1 - c) * mean_grey).
    matrix = brightness * contrast * (saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), _GREY))
    offset = np.full(3, brightness * (1 - contrast) * mean_grey)
    return cv2.transform(image, np.concatenate([matrix, offset[:, None]], 1))


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


def _snap(start: float, end: float, length: int) -> tuple[int, int]:
    """[start, end) in source pixels rounded to whole pixels inside [0, length), at least one pixel."""
    first = min(math.floor(start + 0.5), length - 1)
    return first, min(length, max(first + 1, math.floor(end + 0.5)))


def _place(rng: np.random.Generator, scaled: int, crop: int) -> tuple[int, int, int]:
    """(offset in the rescaled image, offset in the crop, length) of the visible part on one axis."""
    if scaled >= crop:
        return int(rng.integers(0, scaled - crop + 1)), 0, crop
    return 0, int(rng.integers(0, crop - scaled + 1)), scaled


def _check_crop_size(crop_size: Sequence[int]) -> tuple[int, int]:
    if len(crop_size) != 2 or min(crop_size) < 1:
        raise ValueError(f"crop_size must be (height, width) with positive sizes, got {tuple(crop_size)}.")
    return int(crop_size[0]), int(crop_size[1])
