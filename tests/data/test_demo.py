"""The embedded demo dataset: deterministic, well-formed, and learnable by colour and shape."""

from __future__ import annotations

import numpy as np
import pytest

from bisenet_jax.data import create_source, default_data_config, get_dataset_info
from bisenet_jax.data.kinds.demo import CLASS_NAMES, MEAN, STD, DemoSource, measure_mean_std


def test_records_follow_the_data_contract():
    record = DemoSource("train", num_examples=3, image_size=(40, 56))[2]
    assert record["image"].dtype == np.uint8 and record["image"].shape == (40, 56, 3)
    assert record["label"].dtype == np.uint8 and record["label"].shape == (40, 56)
    assert set(np.unique(record["label"])) <= set(range(len(CLASS_NAMES)))
    assert record["id"] == "demo_train_00002"


def test_same_seed_split_and_index_give_the_same_example_in_any_order():
    a, b = DemoSource("val", num_examples=5, seed=3), DemoSource("val", num_examples=5, seed=3)
    first = [a[i] for i in (4, 0, 2)]
    second = [b[i] for i in (2, 4, 0)]
    for x, y in zip(first, [second[1], second[2], second[0]]):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


def test_splits_seeds_and_indices_give_different_examples():
    base = DemoSource("train", num_examples=2, seed=0)[0]["image"]
    for other in (
        DemoSource("val", num_examples=2, seed=0)[0]["image"],
        DemoSource("train", num_examples=2, seed=1)[0]["image"],
        DemoSource("train", num_examples=2, seed=0)[1]["image"],
    ):
        assert not np.array_equal(base, other)


def test_every_class_appears_and_background_is_not_everything():
    source = DemoSource("train", num_examples=20)
    counts = np.bincount(np.concatenate([source[i]["label"].ravel() for i in range(20)]), minlength=5)
    fractions = counts / counts.sum()
    assert np.all(fractions[1:] > 0.02), fractions
    assert 0.5 < fractions[0] < 0.9, fractions


def test_each_shape_class_has_its_characteristic_colour():
    """Disks are red, boxes green, triangles blue, rings yellow: the cue that makes it learnable."""
    source = DemoSource("train", num_examples=20)
    pixels = {c: [] for c in range(5)}
    for i in range(20):
        record = source[i]
        for c in range(1, 5):
            pixels[c].append(record["image"][record["label"] == c].astype(float))
    mean = {c: np.concatenate(pixels[c]).mean(0) for c in range(1, 5)}
    assert mean[1][0] > mean[1][1] + 60 and mean[1][0] > mean[1][2] + 60  # red
    assert mean[2][1] > mean[2][0] + 60 and mean[2][1] > mean[2][2] + 40  # green
    assert mean[3][2] > mean[3][0] + 60 and mean[3][2] > mean[3][1] + 60  # blue
    assert min(mean[4][:2]) > mean[4][2] + 80  # yellow: red and green over blue


def test_registered_info_matches_the_generator():
    info = get_dataset_info("demo")
    assert info.class_names == CLASS_NAMES and info.num_classes == 5
    assert info.palette.shape == (5, 3) and info.ignore_label == 255
    # The constants come from 500 images; 150 estimate them to about +-0.01.
    mean, std = measure_mean_std(DemoSource("train"), num_examples=150)
    np.testing.assert_allclose(mean, MEAN, atol=0.02)
    np.testing.assert_allclose(std, STD, atol=0.02)


def test_create_source_reads_the_demo_sub_config():
    config = default_data_config()
    config.demo.num_val = 7
    config.demo.image_size = (48, 64)
    config.demo.seed = 5
    source = create_source(config, "val")
    assert len(source) == 7 and source[6]["image"].shape == (48, 64, 3)
    np.testing.assert_array_equal(source[6]["image"], DemoSource("val", 7, (48, 64), seed=5)[6]["image"])


def test_unknown_split_and_out_of_range_index_are_reported():
    with pytest.raises(ValueError, match="'test'.*train.*val"):
        DemoSource("test")
    with pytest.raises(IndexError, match="index 3 out of range"):
        DemoSource("train", num_examples=3)[3]
