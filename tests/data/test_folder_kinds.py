"""The dataset kinds with fixed facts and the custom kind: facts value by value, and their readers
on tiny datasets in the official layouts (plus the real CamVid, when present).

Facts (ids, colours, mean/std) follow REFERENCE.md section 6.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bisenet_jax.data import create_source, get_dataset_info
from bisenet_jax.data.kinds import custom
from bisenet_jax.data.kinds.ade20k import ADE20KSource
from bisenet_jax.data.kinds.camvid import CamVidSource, reroot_segnet_path
from bisenet_jax.data.kinds.cityscapes import CityscapesSource
from bisenet_jax.data.kinds.coco_stuff import CocoStuffSource


def assert_record(record, label, record_id):
    assert set(record) == {"image", "label", "id"}
    assert record["image"].dtype == np.uint8 and record["image"].shape == label.shape + (3,)
    assert record["label"].dtype == np.uint8
    np.testing.assert_array_equal(record["label"], label)
    assert record["id"] == record_id


# ---------------------------------------------------------------------------------------------
# Facts


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


# ---------------------------------------------------------------------------------------------
# Cityscapes


def test_cityscapes_maps_label_ids_to_train_ids(files, cityscapes_root, data_config):
    source = create_source(data_config("cityscapes", cityscapes_root), "train")
    assert len(source) == 2 and source.info.name == "cityscapes"
    expected = files.label_with([255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6,
                           7, 8, 9, 10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18])  # fmt: skip
    assert_record(source[0], expected, "aachen_000000_000000")
    np.testing.assert_array_equal(source[0]["image"], files.random_image(0))
    assert_record(source[1], files.label_with([0, 1, 13]), "bochum_000000_000001")
    assert len(create_source(data_config("cityscapes", cityscapes_root), "val")) == 1


def test_cityscapes_reads_ready_train_id_files_when_configured(files, cityscapes_root, data_config):
    source = create_source(data_config("cityscapes", cityscapes_root, cityscapes={"use_train_id_files": True}), "train")
    assert_record(source[0], files.label_with([0, 1, 13, 255]), "aachen_000000_000000")


def test_cityscapes_falls_back_to_train_id_files_when_label_ids_are_absent(files, cityscapes_root):
    for path in (cityscapes_root / "gtFine").rglob("*_labelIds.png"):
        path.unlink()
    source = CityscapesSource(cityscapes_root, "train")
    assert_record(source[1], files.label_with([0, 1, 13, 255]), "bochum_000000_000001")


def test_cityscapes_missing_folder_error_shows_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        CityscapesSource(tmp_path, "train")
    message = str(error.value)
    assert f"{tmp_path}/leftImg8bit/train does not exist" in message
    assert "<root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png" in message
    assert "<root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png" in message


def test_cityscapes_missing_label_file_is_named(cityscapes_root):
    missing = cityscapes_root / "gtFine/train/bochum/bochum_000000_000001_gtFine_labelIds.png"
    missing.unlink()
    expected = r"1 of 2 images have no label file:\n.*bochum_000000_000001_leftImg8bit.png -> expected .*bochum_000000_000001_gtFine_labelIds"
    with pytest.raises(FileNotFoundError, match=expected):
        CityscapesSource(cityscapes_root, "train")


# ---------------------------------------------------------------------------------------------
# CamVid


def test_camvid_folders_map_unlabelled_to_ignore(files, camvid_generated_root):
    source = CamVidSource(camvid_generated_root, "train", use_list_file=False)
    assert len(source) == 3
    assert_record(source[2], files.label_with([2, 10, 255, 3]), "0001TP_train_002")


def test_camvid_list_file_paths_are_rerooted(files, camvid_generated_root, data_config):
    source = create_source(data_config("camvid", camvid_generated_root), "val")  # val.txt exists: used.
    assert len(source) == 2
    assert source.samples[0][0] == str(camvid_generated_root / "val" / "0001TP_val_000.png")
    assert source.samples[0][1] == str(camvid_generated_root / "valannot" / "0001TP_val_000.png")
    assert_record(source[1], files.label_with([1, 10, 255, 3]), "0001TP_val_001")


def test_reroot_segnet_path():
    assert str(reroot_segnet_path("/SegNet/CamVid/train/a.png", "/data/camvid")) == "/data/camvid/train/a.png"
    assert str(reroot_segnet_path("train/a.png", "/data/camvid")) == "/data/camvid/train/a.png"
    assert str(reroot_segnet_path("/elsewhere/a.png", "/data/camvid")) == "/elsewhere/a.png"


def test_camvid_list_file_pointing_to_missing_files_says_how_paths_were_rerooted(camvid_generated_root):
    (camvid_generated_root / "val" / "0001TP_val_001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 listed files do not exist \(the list's /SegNet/CamVid/ prefix is replaced by root="):
        CamVidSource(camvid_generated_root, "val")


def test_camvid_real_data(camvid_root):
    train, val = CamVidSource(camvid_root, "train"), CamVidSource(camvid_root, "val")
    assert (len(train), len(val)) == (367, 101)
    record = train[0]
    assert record["image"].shape == (360, 480, 3) and record["image"].dtype == np.uint8
    assert record["label"].shape == (360, 480)
    assert record["id"] == "0001TP_006690"
    raw = np.asarray(Image.open(camvid_root / "trainannot" / "0001TP_006690.png"))
    np.testing.assert_array_equal(record["label"], np.where(raw == 11, 255, raw))
    assert set(np.unique(val[100]["label"])) <= set(range(11)) | {255}
    # The list file and the folders describe the same split.
    folders = CamVidSource(camvid_root, "val", use_list_file=False)
    assert [s[2] for s in folders.samples] == [s[2] for s in val.samples]


# ---------------------------------------------------------------------------------------------
# COCO-Stuff and ADE20K


def test_coco_stuff_maps_182_raw_ids_to_171_classes(files, coco_stuff_root, data_config):
    source = create_source(data_config("coco_stuff", coco_stuff_root), "train")
    assert len(source) == 2
    assert_record(source[1], files.label_with([0, 11, 80, 170, 255]), "000000000025")
    val = CocoStuffSource(coco_stuff_root, "val2017")  # The official folder name works too.
    assert len(val) == 1 and val[0]["id"] == "000000000139"


def test_ade20k_accepts_parent_folder_and_both_split_names(files, ade20k_root, data_config):
    parent = ade20k_root.parent
    train = create_source(data_config("ade20k", parent), "train")
    assert len(train) == 2
    assert_record(train[0], files.label_with([255, 0, 149, 74]), "ADE_train_00000001")
    assert len(ADE20KSource(ade20k_root, "validation")) == len(ADE20KSource(ade20k_root, "val")) == 1


def test_empty_split_is_an_error(ade20k_root):
    (ade20k_root / "images" / "validation" / "ADE_val_00000001.jpg").unlink()
    with pytest.raises(ValueError, match=r"ADE20K split 'val' is empty: no \*\.jpg images in .*images/validation"):
        ADE20KSource(ade20k_root, "val")


# ---------------------------------------------------------------------------------------------
# Custom datasets


def test_custom_list_file_with_relative_and_absolute_paths(files, tmp_path, data_config):
    files.write_image(tmp_path / "data" / "img" / "a.jpg", files.random_image(0))
    files.write_image(tmp_path / "data" / "lab" / "a.png", files.label_with([0, 1, 2]))
    files.write_image(tmp_path / "elsewhere" / "b.png", files.random_image(1))
    files.write_image(tmp_path / "elsewhere" / "b_mask.png", files.label_with([2, 255]))
    (tmp_path / "data" / "train.txt").write_text(
        f"# image,label\nimg/a.jpg,lab/a.png\n\n{tmp_path}/elsewhere/b.png, {tmp_path}/elsewhere/b_mask.png\n"
    )
    cfg = data_config("custom", tmp_path / "data", custom={"list_file": "{split}.txt", "num_classes": 3})
    source = create_source(cfg, "train")
    assert len(source) == 2 and source.info.num_classes == 3
    assert_record(source[0], files.label_with([0, 1, 2]), "img/a")
    assert_record(source[1], files.label_with([2, 255]), "b")
    np.testing.assert_array_equal(source[1]["image"], files.random_image(1))


def test_custom_folders_match_by_stem_with_split_subfolders_and_label_map(files, tmp_path, data_config):
    root = tmp_path / "mine"
    for split, names in (("train", ["x/one", "two"]), ("val", ["three"])):
        for i, name in enumerate(names):
            files.write_image(root / "images" / split / f"{name}.jpg", files.random_image(i))
            files.write_image(root / "labels" / split / f"{name}_mask.png", files.label_with([0, 1, 2, 3]))
    files.write_image(root / "labels" / "train" / "unused_mask.png", files.label_with([0]))  # No image: ignored.
    cfg = data_config(
        "custom",
        root,
        custom={"num_classes": 3, "label_map": "0:255,1:0,2:1,3:2", "label_suffix": "_mask", "class_names": "a,b,c"},
    )
    train = create_source(cfg, "train")
    assert [sample[2] for sample in train.samples] == ["two", "x/one"]
    assert_record(train[1], files.label_with([255, 0, 1, 2]), "x/one")
    assert train.info.class_names == ("a", "b", "c")
    assert len(create_source(cfg, "val")) == 1


def test_custom_dataset_needs_num_classes(tmp_path, data_config):
    with pytest.raises(ValueError, match=r"set data_config.custom.num_classes"):
        create_source(data_config("custom", tmp_path, custom={"num_classes": 0}), "train")


def test_custom_image_without_label_is_named(files, tmp_path, data_config):
    files.write_image(tmp_path / "images" / "a.png", files.random_image(0))
    files.write_image(tmp_path / "images" / "b.png", files.random_image(1))
    files.write_image(tmp_path / "labels" / "a.png", files.label_with([0]))
    with pytest.raises(FileNotFoundError, match=r"1 of 2 images have no label file:\n  .*images/b.png -> expected .*labels/b.png"):
        create_source(data_config("custom", tmp_path, custom={"num_classes": 2}), "train")


def test_custom_bad_list_line_names_file_and_line(tmp_path):
    (tmp_path / "list.txt").write_text("a.png,b.png\nonly_one_path.png\n")
    with pytest.raises(ValueError, match=r"list.txt:2: expected two paths"):
        custom.samples_from_list(tmp_path / "list.txt")
