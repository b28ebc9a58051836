"""Dataset constants and label maps, checked value by value against REFERENCE.md section 6."""

from __future__ import annotations

import types

import numpy as np
import pytest

from bisenet_jax.data import datasets
from bisenet_jax.data.datasets import (
    DatasetInfo,
    get_dataset_info,
    identity_label_map,
    label_map_from_dict,
    make_dataset_info,
    make_palette,
    register_dataset_info,
)

ALL_RAW = np.arange(256, dtype=np.uint8)


def mapped_and_valid(name: str) -> tuple[np.ndarray, np.ndarray]:
    label_map = get_dataset_info(name).label_map
    mapped, invalid = label_map.apply(ALL_RAW.reshape(16, 16))
    valid = np.ones(256, bool)
    valid[list(invalid)] = False
    assert all(pixels == 1 for pixels in invalid.values())  # Each raw value occurs once.
    return mapped.reshape(-1), valid


def test_cityscapes_label_ids_map_to_the_19_train_ids_and_everything_else_to_ignore():
    reference = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
    mapped, valid = mapped_and_valid("cityscapes")
    for label_id in range(34):  # Every labelId of the dataset.
        assert mapped[label_id] == reference.get(label_id, 255), label_id
        assert valid[label_id]
    for unknown in range(34, 255):  # Not Cityscapes labelIds: ignored and reported as undefined.
        assert mapped[unknown] == 255 and not valid[unknown], unknown
    assert mapped[255] == 255 and valid[255]


def test_camvid_keeps_0_to_10_ignores_unlabelled_11_and_flags_12_to_254():
    mapped, valid = mapped_and_valid("camvid")
    np.testing.assert_array_equal(mapped[:11], np.arange(11))
    assert mapped[11] == 255 and valid[11]
    assert (mapped[12:255] == 255).all() and not valid[12:255].any()
    assert mapped[255] == 255 and valid[255]


def test_coco_stuff_maps_all_256_values():
    unused = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}
    mapped, valid = mapped_and_valid("coco_stuff")
    for raw in range(256):
        if raw < 182 and raw not in unused:
            expected = raw - sum(1 for u in unused if u < raw)  # Shift down past the unused ids.
            assert mapped[raw] == expected and valid[raw], raw
        elif raw == 255:
            assert mapped[raw] == 255 and valid[raw]
        else:  # Unused ids and 182..254 do not exist in COCO-Stuff.
            assert mapped[raw] == 255 and not valid[raw], raw
    # Spot checks by hand: first stuff class, last class, around the gaps.
    assert (mapped[0], mapped[10], mapped[12], mapped[26], mapped[30], mapped[91], mapped[181]) == (0, 10, 11, 24, 26, 80, 170)
    assert sorted(set(mapped[valid]) - {255}) == list(range(171))


def test_ade20k_ignores_other_and_shifts_classes_down_by_one():
    mapped, valid = mapped_and_valid("ade20k")
    assert mapped[0] == 255 and valid[0]
    for raw in range(1, 151):
        assert mapped[raw] == raw - 1 and valid[raw], raw
    assert (mapped[151:255] == 255).all() and not valid[151:255].any()
    assert mapped[255] == 255 and valid[255]


@pytest.mark.parametrize(
    "name, num_classes, first_class, last_class",
    [
        ("cityscapes", 19, "road", "bicycle"),
        ("camvid", 11, "Sky", "Bicyclist"),
        ("coco_stuff", 171, "person", "wood"),
        ("ade20k", 150, "wall", "flag"),
    ],
)
def test_dataset_infos_have_consistent_classes_palettes_and_statistics(name, num_classes, first_class, last_class):
    info = get_dataset_info(name)
    assert info.name == name and info.num_classes == num_classes and info.ignore_label == 255
    assert len(info.class_names) == len(set(info.class_names)) == num_classes
    assert (info.class_names[0], info.class_names[-1]) == (first_class, last_class)
    assert info.palette.shape == (num_classes, 3) and info.palette.dtype == np.uint8
    assert len(np.unique(info.palette, axis=0)) == num_classes  # Distinct colours.
    assert all(0.2 < m < 0.6 for m in info.mean) and all(0.15 < s < 0.35 for s in info.std)


def test_official_palettes_and_statistics():
    cityscapes, camvid = get_dataset_info("cityscapes"), get_dataset_info("camvid")
    assert cityscapes.palette[0].tolist() == [128, 64, 128]  # road
    assert cityscapes.palette[13].tolist() == [0, 0, 142]  # car
    assert cityscapes.palette[18].tolist() == [119, 11, 32]  # bicycle
    assert cityscapes.mean == (0.3257, 0.3690, 0.3223) and cityscapes.std == (0.2112, 0.2148, 0.2115)
    assert camvid.palette[4].tolist() == [60, 40, 222]  # Pavement
    assert camvid.palette[10].tolist() == [0, 128, 192]  # Bicyclist
    assert get_dataset_info("coco_stuff").mean == (0.4696, 0.4464, 0.4072)
    assert get_dataset_info("ade20k").std == (0.2568, 0.2551, 0.2742)


def test_make_palette_is_deterministic_distinct_and_never_black():
    palette = make_palette(300)
    assert palette.shape == (300, 3) and palette.dtype == np.uint8
    np.testing.assert_array_equal(palette, make_palette(300))
    assert len(np.unique(palette, axis=0)) == 300
    assert not (palette == 0).all(axis=1).any()
    # PASCAL VOC bit interleaving from VOC index 1: red, green, olive, blue, ...
    assert palette[:4].tolist() == [[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    np.testing.assert_array_equal(make_palette(5), palette[:5])  # A prefix does not depend on n.


def test_unknown_dataset_error_lists_known_names():
    with pytest.raises(KeyError, match="unknown dataset 'citiscapes'.*ade20k, array_record, camvid, cityscapes, coco_stuff, custom, demo, tfds"):
        get_dataset_info("citiscapes")


def test_config_defined_datasets_need_the_config():
    with pytest.raises(KeyError, match=r"call get_dataset_info\(data_config\)"):
        get_dataset_info("custom")
    options = types.SimpleNamespace(num_classes=3, ignore_label=255, class_names="a,b,c")
    config = types.SimpleNamespace(name="custom", custom=options)
    info = get_dataset_info(config)
    assert info.num_classes == 3 and info.class_names == ("a", "b", "c")
    np.testing.assert_array_equal(info.palette, make_palette(3))


def test_demo_info_is_registered_by_the_demo_module():
    info = get_dataset_info("demo")
    assert info.name == "demo" and info.num_classes == len(info.class_names)


def test_register_dataset_info_refuses_to_replace_silently():
    info = make_dataset_info("test_registry_dataset", num_classes=2)
    try:
        assert register_dataset_info(info) is info
        assert get_dataset_info("test_registry_dataset") is info
        with pytest.raises(ValueError, match="already registered"):
            register_dataset_info(make_dataset_info("test_registry_dataset", num_classes=3))
        replacement = register_dataset_info(make_dataset_info("test_registry_dataset", num_classes=3), overwrite=True)
        assert get_dataset_info("test_registry_dataset") is replacement
    finally:
        datasets._REGISTRY.pop("test_registry_dataset", None)


def test_label_map_apply_counts_undefined_ids_per_value():
    label_map = label_map_from_dict({0: 255, 1: 0, 2: 1}, num_classes=2)
    raw = np.array([[0, 1, 2, 7], [7, 7, 200, 255]], np.uint8)
    mapped, invalid = label_map.apply(raw)
    np.testing.assert_array_equal(mapped, [[255, 0, 1, 255], [255, 255, 255, 255]])
    assert mapped.dtype == np.uint8
    assert invalid == {7: 3, 200: 1}
    assert label_map.apply(raw[:1, :3])[1] == {}


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


def test_dataset_info_validates_its_fields():
    with pytest.raises(ValueError, match="2 class names for num_classes=3"):
        DatasetInfo("x", ("a", "b"), 3, make_palette(3), (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match=r"palette shape \(2, 3\), expected \(3, 3\)"):
        DatasetInfo("x", ("a", "b", "c"), 3, make_palette(2), (0.5,) * 3, (0.2,) * 3)
