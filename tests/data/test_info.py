"""What every dataset kind shares: label maps, palettes, DatasetInfo and declared classes."""

from __future__ import annotations

import numpy as np
import pytest

from bisenet_jax.data import get_dataset_info
from bisenet_jax.data.info import (
    DatasetInfo,
    identity_label_map,
    label_map_from_dict,
    make_palette,
    parse_label_map,
)


def test_make_palette_is_deterministic_distinct_and_never_black():
    palette = make_palette(300)
    assert palette.shape == (300, 3) and palette.dtype == np.uint8
    np.testing.assert_array_equal(palette, make_palette(300))
    assert len(np.unique(palette, axis=0)) == 300
    assert not (palette == 0).all(axis=1).any()
    # PASCAL VOC bit interleaving from VOC index 1: red, green, olive, blue, ...
    assert palette[:4].tolist() == [[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    np.testing.assert_array_equal(make_palette(5), palette[:5])  # A prefix does not depend on n.


def test_label_map_apply_counts_undefined_ids_per_value():
    label_map = label_map_from_dict({0: 255, 1: 0, 2: 1}, num_classes=2)
    raw = np.array([[0, 1, 2, 7], [7, 7, 200, 255]], np.uint8)
    mapped, invalid = label_map.apply(raw)
    np.testing.assert_array_equal(mapped, [[255, 0, 1, 255], [255, 255, 255, 255]])
    assert mapped.dtype == np.uint8
    assert invalid == {7: 3, 200: 1}
    assert label_map.apply(raw[:1, :3])[1] == {}


@pytest.mark.parametrize("name", ["cityscapes", "camvid", "coco_stuff", "ade20k", "identity"])
def test_label_map_apply_equals_table_indexing(name):
    """The OpenCV lookups give exactly numpy's lut[raw] and the pixel count of each undefined id."""
    label_map = identity_label_map(5) if name == "identity" else get_dataset_info(name).label_map
    rng = np.random.default_rng(0)
    defined = np.flatnonzero(label_map.valid).astype(np.uint8)
    for raw in (rng.choice(defined, (31, 45)).astype(np.uint8),  # only defined ids
                rng.integers(0, 256, (31, 45), dtype=np.uint8),  # undefined ones too (where there are any)
                rng.integers(0, 256, (40, 60), dtype=np.uint8)[3:34, 5:50]):  # a strided view
        label, invalid = label_map.apply(raw)
        values, counts = np.unique(raw, return_counts=True)
        expected_invalid = {int(v): int(c) for v, c in zip(values, counts) if not label_map.valid[v]}
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, label_map.lut[raw])
        assert invalid == expected_invalid
    assert invalid  # Random ids hit undefined ones: the counting path ran too.


def test_label_map_apply_keeps_the_shape_of_other_arrays():
    label_map = label_map_from_dict({1: 0}, num_classes=1)
    raw = np.array([[[1, 2], [1, 1]]], np.uint8)  # (1, 2, 2)
    mapped, invalid = label_map.apply(raw)
    np.testing.assert_array_equal(mapped, [[[0, 255], [0, 0]]])
    assert invalid == {2: 1}
    assert label_map.apply(np.zeros((0, 4), np.uint8))[0].shape == (0, 4)
    with pytest.raises(ValueError, match="raw labels must be uint8"):
        label_map.apply(raw.astype(np.int32))


def test_identity_label_map_accepts_classes_and_ignore_only():
    mapped, invalid = identity_label_map(3, ignore_label=250).apply(np.array([[0, 2, 3, 250, 255]], np.uint8))
    np.testing.assert_array_equal(mapped, [[0, 2, 250, 250, 250]])
    assert invalid == {3: 1, 255: 1}


@pytest.mark.parametrize(
    "mapping, num_classes, ignore_label, message",
    [
        ({1: 5}, 3, 255, "maps raw id 1 to 5"),
        ({300: 1}, 3, 255, "not a uint8 label value"),
        ({}, 3, 2, "ignore_label 2 must be in 3..255"),
        ({}, 0, 255, "num_classes must be in 1..255"),
    ],
)
def test_label_map_from_dict_rejects_inconsistent_definitions(mapping, num_classes, ignore_label, message):
    with pytest.raises(ValueError, match=message):
        label_map_from_dict(mapping, num_classes, ignore_label)


@pytest.mark.parametrize("text", ["0:x", "1-2", "0:1:2"])
def test_malformed_label_map_string_is_explained(text):
    with pytest.raises(ValueError, match="is not `src:dst` with integer ids"):
        parse_label_map(text)


def test_label_map_accepts_dicts_with_string_keys():
    assert parse_label_map({"0": 255, "1": 0}) == {0: 255, 1: 0}
    assert parse_label_map("") is None


def test_dataset_info_validates_its_fields():
    with pytest.raises(ValueError, match="2 class names for num_classes=3"):
        DatasetInfo("x", ("a", "b"), 3, make_palette(3), (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match=r"palette shape \(2, 3\), expected \(3, 3\)"):
        DatasetInfo("x", ("a", "b", "c"), 3, make_palette(2), (0.5,) * 3, (0.2,) * 3)


def test_declared_classes_come_from_the_kind_sub_config(data_config):
    config = data_config("custom", custom={"num_classes": 3, "class_names": "a, b,c", "label_map": "0:255,1:0,2:1,3:2"})
    info = get_dataset_info(config)
    assert info.name == "custom" and info.num_classes == 3 and info.class_names == ("a", "b", "c")
    np.testing.assert_array_equal(info.palette, make_palette(3))
    assert info.mean == (0.485, 0.456, 0.406) and info.ignore_label == 255
    assert info.label_map.apply(np.array([[0, 1, 3]], np.uint8))[0].tolist() == [[255, 0, 2]]
    unnamed = get_dataset_info(data_config("custom", custom={"num_classes": 2}))
    assert unnamed.class_names == ("class_0", "class_1") and unnamed.label_map is None


def test_declared_class_names_must_match_num_classes(data_config):
    with pytest.raises(ValueError, match=r"data_config.custom.class_names has 2 names for num_classes=3"):
        get_dataset_info(data_config("custom", custom={"num_classes": 3, "class_names": "a,b"}))
