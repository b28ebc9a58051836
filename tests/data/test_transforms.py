"""Training and eval transforms: geometry shared by image and label, padding, jitter, normalisation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bisenet_jax.data.transforms import EvalTransform, Normalizer, TrainBatcher, TrainTransform, _jitter

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
COLOURS = np.array([(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)], np.uint8)


def _blocks(height: int = 30, width: int = 40) -> dict:
    """A record whose image is COLOURS[label]: 4 quadrants plus a 255 (ignore) stripe."""
    label = np.zeros((height, width), np.uint8)
    label[: height // 2, width // 2 :] = 1
    label[height // 2 :, : width // 2] = 2
    label[height // 2 :, width // 2 :] = 3
    image = COLOURS[label]
    label[:, :3] = 255
    return {"image": image, "label": label, "id": "blocks"}


def _denormalize(image: np.ndarray) -> np.ndarray:
    return (image * np.array(STD) + np.array(MEAN)) * 255.0


def _transform(**kwargs) -> TrainTransform:
    options = dict(crop_size=(24, 32), mean=MEAN, std=STD, color_jitter=0.0)
    return TrainTransform(**(options | kwargs))


def test_outputs_have_the_crop_size_and_contract_dtypes():
    out = _transform(crop_size=(16, 20)).random_map(_blocks(), np.random.default_rng(0))
    assert out["image"].shape == (16, 20, 3) and out["image"].dtype == np.float32
    assert out["label"].shape == (16, 20) and out["label"].dtype == np.int32
    assert set(out) == {"image", "label"}


@pytest.mark.parametrize("seed", range(6))
def test_image_and_label_get_the_same_scale_crop_and_flip(seed):
    """Away from block edges every labelled pixel keeps its block's colour, whatever was drawn."""
    out = _transform(scale_range=(0.5, 2.0)).random_map(_blocks(), np.random.default_rng(seed))
    image, label = _denormalize(out["image"]), out["label"]
    inside = label != 255
    # Pixels whose 3x3 neighbourhood has one label are not blended by the bilinear resize.
    padded = np.pad(label, 1, mode="edge")
    uniform = np.all([padded[1 + dy : 1 + dy + label.shape[0], 1 + dx : 1 + dx + label.shape[1]] == label
                      for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    check = inside & uniform
    assert check.sum() > 50
    np.testing.assert_allclose(image[check], COLOURS[label[check]], atol=1.5)


def test_flip_mirrors_image_and_label_together():
    record = _blocks()
    rng_seeds = range(20)
    outs = [_transform(crop_size=(30, 40), scales=(1.0,)).random_map(record, np.random.default_rng(s))
            for s in rng_seeds]
    flipped = [o for o in outs if o["label"][0, -1] == 255]  # the ignore stripe moved to the right
    unflipped = [o for o in outs if o["label"][0, 0] == 255]
    assert flipped and unflipped
    for out in flipped:
        np.testing.assert_array_equal(out["label"], np.asarray(record["label"], np.int32)[:, ::-1])
        np.testing.assert_allclose(_denormalize(out["image"]), record["image"][:, ::-1], atol=0.01)


def test_scale_one_crops_image_and_label_at_the_same_offset():
    rng = np.random.default_rng(0)
    record = {"image": rng.integers(0, 256, (20, 24, 3), np.uint8),
              "label": rng.integers(0, 5, (20, 24), np.uint8), "id": "x"}
    out = _transform(crop_size=(12, 16), scales=(1.0,), hflip=False).random_map(record, np.random.default_rng(3))
    offsets = [(y, x) for y in range(9) for x in range(9)
               if np.array_equal(out["label"], record["label"][y : y + 12, x : x + 16])]
    assert len(offsets) == 1
    y, x = offsets[0]
    np.testing.assert_allclose(_denormalize(out["image"]), record["image"][y : y + 12, x : x + 16], atol=0.01)


def _source_coordinates(start: int, end: int, size: int) -> np.ndarray:
    """Half-pixel centres: where output pixels 0..size-1 of window [start, end) sample the source."""
    return start + (np.arange(size) + 0.5) * (end - start) / size - 0.5


def _bilinear_reference(image: np.ndarray, box, size, clamp_to_window: bool = True) -> np.ndarray:
    """The module's definition in float: bilinear at half-pixel centres, neighbours clamped to the
    window (as resizing the window alone does) or to the whole image (as rescaling it all would)."""
    left, top, right, bottom = box
    (height, width), image = size, image.astype(float)
    low_x, high_x = (left, right - 1) if clamp_to_window else (0, image.shape[1] - 1)
    low_y, high_y = (top, bottom - 1) if clamp_to_window else (0, image.shape[0] - 1)
    u, v = _source_coordinates(left, right, width), _source_coordinates(top, bottom, height)
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = (u - u0)[None, :, None], (v - v0)[:, None, None]
    x0, x1 = np.clip(u0, low_x, high_x), np.clip(u0 + 1, low_x, high_x)
    y0, y1 = np.clip(v0, low_y, high_y), np.clip(v0 + 1, low_y, high_y)
    rows0 = image[y0][:, x0] * (1 - fu) + image[y0][:, x1] * fu
    rows1 = image[y1][:, x0] * (1 - fu) + image[y1][:, x1] * fu
    return rows0 * (1 - fv) + rows1 * fv


def _nearest_reference(start: int, end: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(source index of each output pixel, where it is a tie): the pixel containing u + 0.5."""
    position = _source_coordinates(start, end, size) + 0.5
    return np.floor(position).astype(int), np.abs(position - np.round(position)) < 1e-9


@pytest.mark.parametrize("scale", [0.8, 1.0, 1.37, 1.7, 2.0])
def test_window_resampling_follows_the_half_pixel_definition(scale):
    """Image: bilinear at half-pixel centres of the snapped window (OpenCV's 11-bit fixed-point
    weights: within one level of the float definition). Label: the source pixel under the same
    centre, exactly (at exact ties, where a centre falls on a pixel border, either side)."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (37, 53, 3), np.uint8)
    label = rng.integers(0, 5, (37, 53), np.uint8)
    record = {"image": image, "label": label, "id": "x"}
    transform = _transform(crop_size=(20, 25), scales=(scale,), hflip=False)
    for seed in range(4):
        augmentation = transform.sample(record, np.random.default_rng(seed))
        left, top, right, bottom = augmentation.box
        assert all(isinstance(value, int) for value in augmentation.box)
        assert 0 <= left < right <= 53 and 0 <= top < bottom <= 37
        # Snapping moves each end by at most half a source pixel.
        assert abs((right - left) * scale - 25) <= scale and abs((bottom - top) * scale - 20) <= scale
        out = transform.apply(record, augmentation)
        expected = _bilinear_reference(image, augmentation.box, (20, 25))
        np.testing.assert_allclose(_denormalize(out["image"]), expected, atol=1.0 + 1e-3)
        xs, x_ties = _nearest_reference(left, right, 25)
        ys, y_ties = _nearest_reference(top, bottom, 20)
        exact = ~(y_ties[:, None] | x_ties[None, :])
        assert exact.mean() > 0.5
        np.testing.assert_array_equal(out["label"][exact], label[ys][:, xs][exact])
        candidates = [label[np.clip(ys + dy * y_ties, 0, 36)][:, np.clip(xs + dx * x_ties, 0, 52)]
                      for dy in (-1, 0) for dx in (-1, 0)]
        assert np.any([out["label"] == candidate for candidate in candidates], axis=0).all()


def test_region_resampling_equals_rescaling_the_whole_image_then_cropping():
    """Resampling only the window gives the pixels of the whole image rescaled (at the snapped
    scale) and cropped, except where the bilinear footprint crosses the window edge: only the
    outermost output rows/columns when upscaling, none when downscaling."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (37, 53, 3), np.uint8)
    record = {"image": image, "label": np.zeros((37, 53), np.uint8), "id": "x"}
    for scale, border in ((0.8, 0), (1.7, 1)):
        transform = _transform(crop_size=(20, 25), scales=(scale,), hflip=False)
        augmentation = transform.sample(record, np.random.default_rng(0))
        out = _denormalize(transform.apply(record, augmentation)["image"])
        whole = _bilinear_reference(image, augmentation.box, (20, 25), clamp_to_window=False)
        inner = (slice(border, 20 - border), slice(border, 25 - border))
        np.testing.assert_allclose(out[inner], whole[inner], atol=1.0 + 1e-3)
        if border:
            assert np.abs(out - whole).max() > 1.0  # The clamp at the window edge is visible.


def test_small_images_are_padded_with_zero_and_ignore():
    record = {"image": np.full((10, 12, 3), 77, np.uint8), "label": np.ones((10, 12), np.uint8), "id": "x"}
    out = _transform(crop_size=(16, 20), scales=(0.5,)).random_map(record, np.random.default_rng(0))
    visible = out["label"] == 1
    assert visible.sum() == 5 * 6
    assert np.all(out["label"][~visible] == 255)
    assert np.all(out["image"][~visible] == 0.0)
    np.testing.assert_allclose(_denormalize(out["image"][visible]), 77, atol=0.01)


def test_scales_list_is_used_instead_of_the_range():
    record = {"image": np.zeros((10, 10, 3), np.uint8), "label": np.zeros((10, 10), np.uint8), "id": "x"}
    transform = _transform(crop_size=(40, 40), scales=(1.0, 3.0))
    visible = {int((transform.random_map(record, np.random.default_rng(s))["label"] == 0).sum()) for s in range(20)}
    assert visible == {100, 900}


def test_ignore_label_survives_rescaling():
    record = _blocks()
    out = _transform(scale_range=(1.3, 1.3)).random_map(record, np.random.default_rng(0))
    assert set(np.unique(out["label"])) <= {0, 1, 2, 3, 255}


def test_same_rng_seed_gives_the_same_example_and_other_seeds_differ():
    transform = TrainTransform((24, 32), MEAN, STD)  # all augmentations on
    record = _blocks()
    a = transform.random_map(record, np.random.default_rng(7))
    b = transform.random_map(record, np.random.default_rng(7))
    c = transform.random_map(record, np.random.default_rng(8))
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.array_equal(a["image"], c["image"])


def _jitter_reference(image: np.ndarray, factors, order) -> np.ndarray:
    """Brightness, contrast, saturation as PIL's ImageEnhance defines them, in float, one by one."""
    grey_weights = np.array([0.299, 0.587, 0.114])
    x = image.astype(float)
    for op in order:
        f = factors[op]
        if op == 0:  # Brightness: blend with black.
            x = f * x
        elif op == 1:  # Contrast: blend with the image's mean grey level.
            x = f * x + (1 - f) * (x @ grey_weights).mean()
        else:  # Saturation (Color): blend with each pixel's grey level.
            x = f * x + (1 - f) * (x @ grey_weights)[..., None]
    return x


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_colour_jitter_equals_brightness_contrast_saturation_applied_one_by_one(order):
    """The three operations commute (before clipping), so any order gives the one-pass result."""
    image = np.random.default_rng(0).integers(100, 150, (16, 16, 3), np.uint8)
    factors = (1.3, 0.7, 1.2)
    jittered = _jitter(image, *factors).astype(float)
    reference = np.clip(_jitter_reference(image, factors, order), 0, 255)  # clipped once, at the end
    # Rounding (0.5) plus OpenCV's uint8 cv2.transform, which rounds the matrix and offset to
    # 1/1024 (BITS = 10 in its transform_8u): at most (3 * 255 + 1) / 2048 more.
    np.testing.assert_allclose(jittered, reference, atol=0.5 + (3 * 255 + 1) / 2048)
    assert (jittered == np.rint(reference)).mean() > 0.9  # Mostly exactly rounded, no bias.
    assert abs((jittered - reference).mean()) < 0.1


def test_jitter_factors_are_drawn_per_example():
    transform = TrainTransform((8, 8), MEAN, STD, color_jitter=0.4)
    record = _blocks()
    factors = np.array([transform.sample(record, np.random.default_rng(s)).jitter for s in range(30)])
    assert factors.min() >= 0.6 and factors.max() <= 1.4 and factors.std() > 0.15
    assert TrainTransform((8, 8), MEAN, STD, color_jitter=0.0).sample(record, np.random.default_rng(0)).jitter is None


def test_colour_jitter_clips_to_the_uint8_range():
    image = np.full((4, 4, 3), 250, np.uint8)
    assert np.all(_jitter(image, 1.4, 1.0, 1.0) == 255)
    assert np.all(_jitter(image, 0.6, 1.0, 1.0) == 150)
    assert _jitter(image, 1.0, 1.0, 1.0).dtype == np.uint8


def test_batcher_writes_the_same_examples_as_the_per_example_transform():
    transform = TrainTransform((12, 16), MEAN, STD, scale_range=(0.5, 1.5))
    records = [_blocks(), _blocks(20, 14)]  # the second one needs padding at most scales
    examples = [{"record": r, "augmentation": transform.sample(r, np.random.default_rng(i))}
                for i, r in enumerate(records)]
    batch = TrainBatcher(transform)(examples)
    assert batch["image"].shape == (2, 12, 16, 3) and batch["label"].shape == (2, 12, 16)
    for i, record in enumerate(records):
        single = transform.random_map(record, np.random.default_rng(i))
        np.testing.assert_array_equal(batch["image"][i], single["image"])
        np.testing.assert_array_equal(batch["label"][i], single["label"])


def test_batcher_can_write_into_shared_memory():
    transform = TrainTransform((8, 8), MEAN, STD)
    examples = [{"record": _blocks(), "augmentation": transform.sample(_blocks(), np.random.default_rng(0))}]
    batch = TrainBatcher(transform, shared_memory=True)(examples)
    try:
        assert type(batch["image"]).__name__ == "SharedMemoryArray"
        np.testing.assert_array_equal(batch["image"][0], transform.random_map(_blocks(), np.random.default_rng(0))["image"])
    finally:
        for array in batch.values():
            array.shm.close()
            array.shm.unlink()


def test_normalizer_matches_the_formula():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)
    expected = (image / 255.0 - np.array(MEAN)) / np.array(STD)
    out = Normalizer(MEAN, STD)(image)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # Bit for bit the float32 elementwise computation (the table holds its 256 values per channel).
    mean32, std32 = np.asarray(MEAN, np.float32), np.asarray(STD, np.float32)
    exact32 = (image.astype(np.float32) - mean32 * np.float32(255)) * (np.float32(1) / (std32 * np.float32(255)))
    np.testing.assert_array_equal(out, exact32)


def test_normalizer_writes_into_a_strided_view_in_place():
    image = np.random.default_rng(1).integers(0, 256, (5, 7, 3), np.uint8)
    canvas = np.full((9, 12, 3), -7.0, np.float32)
    window = canvas[2:7, 3:10]
    assert Normalizer(MEAN, STD)(image, out=window) is window
    np.testing.assert_array_equal(canvas[2:7, 3:10], Normalizer(MEAN, STD)(image))
    canvas[2:7, 3:10] = -7.0
    assert np.all(canvas == -7.0)  # Nothing written outside the window.


def test_eval_transform_keeps_the_original_size_and_id():
    record = _blocks(31, 45)
    out = EvalTransform(MEAN, STD).map(record)
    assert out["image"].shape == (31, 45, 3) and out["image"].dtype == np.float32
    assert out["label"].dtype == np.int32 and out["id"] == "blocks"
    np.testing.assert_array_equal(out["label"], record["label"])
    np.testing.assert_allclose(_denormalize(out["image"]), record["image"], atol=0.01)


def test_bad_arguments_and_mismatched_sizes_are_reported():
    with pytest.raises(ValueError, match="crop_size"):
        TrainTransform((0, 10), MEAN, STD)
    with pytest.raises(ValueError, match="scale_range"):
        TrainTransform((10, 10), MEAN, STD, scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="color_jitter"):
        TrainTransform((10, 10), MEAN, STD, color_jitter=1.5)
    record = {"image": np.zeros((10, 12, 3), np.uint8), "label": np.zeros((10, 11), np.uint8), "id": "a.png"}
    with pytest.raises(ValueError, match=r"a\.png.*differ in size"):
        _transform().random_map(record, np.random.default_rng(0))
