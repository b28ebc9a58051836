"""Folder readers on tiny datasets in their official layouts, the real CamVid, and bad input."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import types

import cv2
import grain
import numpy as np
import pytest
from PIL import Image

from bisenet_jax.data import sources
from bisenet_jax.data.sources import (
    ADE20KSource,
    CamVidSource,
    CityscapesSource,
    CocoStuffSource,
    ImageReadError,
    InvalidLabelWarning,
    create_source,
    read_image,
    read_label,
    reroot_segnet_path,
)


def config(name, root="", **sections):
    """A data config as plain namespaces (sources read fields with getattr defaults)."""
    sections = {key: types.SimpleNamespace(**value) if isinstance(value, dict) else value for key, value in sections.items()}
    return types.SimpleNamespace(name=name, root=str(root), **sections)


def assert_record(record, label, record_id):
    assert set(record) == {"image", "label", "id"}
    assert record["image"].dtype == np.uint8 and record["image"].shape == label.shape + (3,)
    assert record["label"].dtype == np.uint8
    np.testing.assert_array_equal(record["label"], label)
    assert record["id"] == record_id


# ---------------------------------------------------------------------------------------------
# Cityscapes


def test_cityscapes_maps_label_ids_to_train_ids(files, cityscapes_root):
    source = create_source(config("cityscapes", cityscapes_root), "train")
    assert len(source) == 2 and source.info.name == "cityscapes"
    expected = files.label_with([255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6,
                           7, 8, 9, 10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18])  # fmt: skip
    assert_record(source[0], expected, "aachen_000000_000000")
    np.testing.assert_array_equal(source[0]["image"], files.random_image(0))
    assert_record(source[1], files.label_with([0, 1, 13]), "bochum_000000_000001")
    assert len(create_source(config("cityscapes", cityscapes_root), "val")) == 1


def test_cityscapes_reads_ready_train_id_files_when_configured(files, cityscapes_root):
    source = create_source(config("cityscapes", cityscapes_root, cityscapes={"use_train_id_files": True}), "train")
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


def test_camvid_list_file_paths_are_rerooted(files, camvid_generated_root):
    source = create_source(config("camvid", camvid_generated_root), "val")  # val.txt exists: used.
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


def test_coco_stuff_maps_182_raw_ids_to_171_classes(files, coco_stuff_root):
    source = create_source(config("coco_stuff", coco_stuff_root), "train")
    assert len(source) == 2
    assert_record(source[1], files.label_with([0, 11, 80, 170, 255]), "000000000025")
    val = CocoStuffSource(coco_stuff_root, "val2017")  # The official folder name works too.
    assert len(val) == 1 and val[0]["id"] == "000000000139"


def test_ade20k_accepts_parent_folder_and_both_split_names(files, ade20k_root):
    parent = ade20k_root.parent
    train = create_source(config("ade20k", parent), "train")
    assert len(train) == 2
    assert_record(train[0], files.label_with([255, 0, 149, 74]), "ADE_train_00000001")
    assert len(ADE20KSource(ade20k_root, "validation")) == len(ADE20KSource(ade20k_root, "val")) == 1


def test_empty_split_is_an_error(ade20k_root):
    (ade20k_root / "images" / "validation" / "ADE_val_00000001.jpg").unlink()
    with pytest.raises(ValueError, match=r"ADE20K split 'val' is empty: no \*\.jpg images in .*images/validation"):
        ADE20KSource(ade20k_root, "val")


# ---------------------------------------------------------------------------------------------
# Custom datasets


def test_custom_list_file_with_relative_and_absolute_paths(files, tmp_path):
    files.write_image(tmp_path / "data" / "img" / "a.jpg", files.random_image(0))
    files.write_image(tmp_path / "data" / "lab" / "a.png", files.label_with([0, 1, 2]))
    files.write_image(tmp_path / "elsewhere" / "b.png", files.random_image(1))
    files.write_image(tmp_path / "elsewhere" / "b_mask.png", files.label_with([2, 255]))
    (tmp_path / "data" / "train.txt").write_text(
        f"# image,label\nimg/a.jpg,lab/a.png\n\n{tmp_path}/elsewhere/b.png, {tmp_path}/elsewhere/b_mask.png\n"
    )
    cfg = config("custom", tmp_path / "data", custom={"list_file": "{split}.txt", "num_classes": 3})
    source = create_source(cfg, "train")
    assert len(source) == 2 and source.info.num_classes == 3
    assert_record(source[0], files.label_with([0, 1, 2]), "img/a")
    assert_record(source[1], files.label_with([2, 255]), "b")
    np.testing.assert_array_equal(source[1]["image"], files.random_image(1))


def test_custom_folders_match_by_stem_with_split_subfolders_and_label_map(files, tmp_path):
    root = tmp_path / "mine"
    for split, names in (("train", ["x/one", "two"]), ("val", ["three"])):
        for i, name in enumerate(names):
            files.write_image(root / "images" / split / f"{name}.jpg", files.random_image(i))
            files.write_image(root / "labels" / split / f"{name}_mask.png", files.label_with([0, 1, 2, 3]))
    files.write_image(root / "labels" / "train" / "unused_mask.png", files.label_with([0]))  # No image: ignored.
    cfg = config(
        "custom",
        root,
        custom={"num_classes": 3, "label_map": "0:255,1:0,2:1,3:2", "label_suffix": "_mask", "class_names": "a,b,c"},
    )
    train = create_source(cfg, "train")
    assert [sample[2] for sample in train.samples] == ["two", "x/one"]
    assert_record(train[1], files.label_with([255, 0, 1, 2]), "x/one")
    assert train.info.class_names == ("a", "b", "c")
    assert len(create_source(cfg, "val")) == 1


def test_custom_dataset_needs_num_classes(tmp_path):
    with pytest.raises(ValueError, match=r"set data_config.custom.num_classes"):
        create_source(config("custom", tmp_path, custom={"num_classes": 0}), "train")


def test_custom_image_without_label_is_named(files, tmp_path):
    files.write_image(tmp_path / "images" / "a.png", files.random_image(0))
    files.write_image(tmp_path / "images" / "b.png", files.random_image(1))
    files.write_image(tmp_path / "labels" / "a.png", files.label_with([0]))
    with pytest.raises(FileNotFoundError, match=r"1 of 2 images have no label file:\n  .*images/b.png -> expected .*labels/b.png"):
        create_source(config("custom", tmp_path, custom={"num_classes": 2}), "train")


def test_custom_bad_list_line_names_file_and_line(tmp_path):
    (tmp_path / "list.txt").write_text("a.png,b.png\nonly_one_path.png\n")
    with pytest.raises(ValueError, match=r"list.txt:2: expected two paths"):
        sources.custom_samples_from_list(tmp_path / "list.txt")


@pytest.mark.parametrize("text", ["0:x", "1-2", "0:1:2"])
def test_malformed_label_map_string_is_explained(text):
    with pytest.raises(ValueError, match="is not `src:dst` with integer ids"):
        sources.parse_label_map(text)


def test_label_map_accepts_dicts_with_string_keys():
    assert sources.parse_label_map({"0": 255, "1": 0}) == {0: 255, 1: 0}
    assert sources.parse_label_map("") is None


# ---------------------------------------------------------------------------------------------
# Decoding and bad input


def make_custom(files, tmp_path, image=None, label=None, image_name="a.png", num_classes=3, strict=False):
    files.write_image(tmp_path / "images" / image_name, files.random_image(0) if image is None else image)
    files.write_image(tmp_path / "labels" / "a.png", files.label_with([0, 1, 2]) if label is None else label)
    cfg = config("custom", tmp_path, custom={"num_classes": num_classes})
    cfg.strict = strict
    return create_source(cfg, "train")


def test_truncated_image_error_names_the_file(files, tmp_path):
    source = make_custom(files, tmp_path, image=files.random_image(0, files.HEIGHT, files.WIDTH))
    path = tmp_path / "images" / "a.png"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ImageReadError, match=rf"cannot read {path}: .*truncated, corrupt or not an image"):
        source[0]


def test_file_that_is_not_an_image_is_named(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a png")
    with pytest.raises(ImageReadError, match=rf"cannot read {path}: cannot identify image file"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("kept", [0.5, 0.97])
def test_image_truncated_anywhere_is_an_error_naming_the_file(files, tmp_path, suffix, kept):
    """OpenCV returns None (no exception) for truncated files; read_image must still raise, naming
    the file, also for an in-memory file (ArrayRecord) under its record name."""
    path = files.write_image(tmp_path / f"a{suffix}", files.random_image(0, 48, 64))
    data = path.read_bytes()[: int(len(path.read_bytes()) * kept)]
    path.write_bytes(data)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB) is None
    with pytest.raises(ImageReadError, match=rf"cannot read {path}: image file is truncated.*re-download"):
        read_image(path)
    with pytest.raises(ImageReadError, match=r"cannot read shard-3\[7\] image: image file is truncated"):
        read_image(io.BytesIO(data), name="shard-3[7] image")


def test_missing_image_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"file not found: {tmp_path / 'gone.png'}"):
        read_image(tmp_path / "gone.png")


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P", "P+transparency", "1", "I;16"])
def test_images_are_decoded_by_opencv_with_pils_conversions(files, tmp_path, monkeypatch, mode):
    """The fast path (no PIL fallback) gives what the PIL path gives: grey replicated, alpha
    dropped, palette expanded, 16-bit samples reduced to their top 8 bits (truncated, not rounded)."""
    rgb = files.random_image(4, 9, 11)
    if mode == "I;16":
        values = np.random.default_rng(0).integers(0, 65536, (9, 11)).astype(np.uint16)
        values[0, :3] = (0x01FF, 0x0180, 0xFFFF)  # top bits 1, 1, 255
        pil = Image.fromarray(values)
        expected = np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    else:
        pil = Image.fromarray(rgb).convert(mode.split("+")[0])
        expected = None
    options = {"transparency": 2} if mode == "P+transparency" else {}
    path = tmp_path / "a.png"
    pil.save(path, **options)
    if expected is None:
        expected = np.asarray(Image.open(path).convert("RGB"))
    pil_path = sources._read_image_pil(io.BytesIO(path.read_bytes()), str(path))
    np.testing.assert_array_equal(pil_path, expected)

    def no_fallback(*args):
        raise AssertionError("read_image fell back to PIL")

    monkeypatch.setattr(sources, "_read_image_pil", no_fallback)
    image = read_image(path)
    assert image.shape == (9, 11, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, expected)
    if mode == "RGB":
        np.testing.assert_array_equal(image, rgb)  # RGB order, not OpenCV's BGR.


def test_jpeg_exif_orientation_is_not_applied(files, tmp_path):
    """Annotations are aligned with the stored pixels; cv2.imdecode would rotate by default."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display.
    path = tmp_path / "a.jpg"
    Image.fromarray(files.random_image(1, 10, 16)).save(path, exif=exif, quality=95)
    assert cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR_RGB).shape == (16, 10, 3)
    image = read_image(path)
    assert image.shape == (10, 16, 3)
    np.testing.assert_allclose(image, np.asarray(Image.open(path)), atol=1)


def test_opencv_runs_on_the_calling_thread(files, tmp_path, monkeypatch):
    """Once per process (grain workers included) the data pipeline sets cv2.setNumThreads(1)."""
    monkeypatch.setattr(sources, "_opencv_pid", None)  # As in a fresh process.
    cv2.setNumThreads(2)
    read_image(files.write_image(tmp_path / "a.png", files.random_image(0)))
    assert cv2.getNumThreads() == 1 and sources._opencv_pid == os.getpid()


def test_label_size_mismatch_names_the_file_and_both_sizes(files, tmp_path):
    source = make_custom(files, tmp_path, label=np.zeros((files.HEIGHT, files.WIDTH + 1), np.uint8))
    width, height = files.WIDTH, files.HEIGHT
    expected = rf"labels/a.png: label size {width + 1}x{height} \(WxH\) differs from the image size {width}x{height}"
    with pytest.raises(ValueError, match=expected):
        source[0]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK"])
def test_non_rgb_images_are_converted_to_rgb(files, tmp_path, mode):
    rgb = files.random_image(3)
    pil = Image.fromarray(rgb).convert(mode)
    path = tmp_path / ("a.jpg" if mode == "CMYK" else "a.png")
    pil.save(path)
    image = read_image(path)
    assert image.shape == (files.HEIGHT, files.WIDTH, 3) and image.dtype == np.uint8
    if mode == "CMYK":  # Lossy JPEG: only the shape is exact.
        return
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(image, expected)
    if mode in ("L", "LA"):  # Grey replicated to the three channels.
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()
    if mode == "RGBA":  # Colour kept, alpha dropped.
        np.testing.assert_array_equal(image, rgb)


def test_grayscale_and_rgba_images_go_through_a_source(files, tmp_path):
    source = make_custom(files, tmp_path)
    files.write_image(tmp_path / "images" / "a.png", np.full((files.HEIGHT, files.WIDTH), 77, np.uint8))
    assert (source[0]["image"] == 77).all() and source[0]["image"].shape == (files.HEIGHT, files.WIDTH, 3)
    files.write_image(tmp_path / "images" / "a.png", files.random_image(5), mode="RGBA")
    np.testing.assert_array_equal(source[0]["image"], files.random_image(5))


def test_palette_label_keeps_its_indices(files, tmp_path):
    indices = files.label_with([0, 1, 2, 255])
    label = Image.fromarray(indices).convert("P")  # Same indices, then a palette of random colours.
    label.putpalette(np.random.default_rng(0).integers(0, 256, 768).tolist())
    label.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(read_label(tmp_path / "p.png"), indices)


def test_palette_label_is_not_given_to_opencv_which_would_expand_it(files, tmp_path):
    indices = files.label_with([0, 1, 2, 3])
    label = Image.fromarray(indices).convert("P")
    label.putpalette([value for index in range(256) for value in (index * 7 % 256, 200, 10)])
    label.save(tmp_path / "p.png")
    data = np.frombuffer((tmp_path / "p.png").read_bytes(), np.uint8)
    assert cv2.imdecode(data, cv2.IMREAD_UNCHANGED).shape == (files.HEIGHT, files.WIDTH, 3)  # colours
    assert not np.array_equal(cv2.imdecode(data, cv2.IMREAD_GRAYSCALE), indices)  # luma of the colours
    np.testing.assert_array_equal(read_label(tmp_path / "p.png"), indices)


def test_grey_png_labels_are_decoded_by_opencv_and_other_labels_by_pil(files, tmp_path, monkeypatch):
    ids = files.label_with([0, 1, 2, 255, 17])
    Image.fromarray(ids).save(tmp_path / "grey.png")
    Image.fromarray(ids).save(tmp_path / "grey_trns.png", transparency=1)  # tRNS: still plain ids
    Image.fromarray(ids).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(ids.astype(np.uint16)).save(tmp_path / "grey16.png")
    pil_decoded = []
    pil_reader = sources._read_label_pil
    monkeypatch.setattr(sources, "_read_label_pil", lambda *args: pil_decoded.append(args[1]) or pil_reader(*args))
    np.testing.assert_array_equal(read_label(tmp_path / "grey.png"), ids)
    np.testing.assert_array_equal(read_label(tmp_path / "grey_trns.png"), ids)
    np.testing.assert_array_equal(read_label(io.BytesIO((tmp_path / "grey.png").read_bytes()), name="in memory"), ids)
    assert pil_decoded == []
    np.testing.assert_array_equal(read_label(tmp_path / "palette.png"), ids)
    np.testing.assert_array_equal(read_label(tmp_path / "grey16.png"), ids)
    assert pil_decoded == [str(tmp_path / "palette.png"), str(tmp_path / "grey16.png")]


@pytest.mark.parametrize("kept", [0.3, 0.97])
def test_truncated_label_error_names_the_file(files, tmp_path, kept):
    path = files.write_image(tmp_path / "label.png", np.random.default_rng(0).integers(0, 19, (48, 64)))
    path.write_bytes(path.read_bytes()[: int(len(path.read_bytes()) * kept)])
    with pytest.raises(ImageReadError, match=rf"cannot read {path}: image file is truncated"):
        read_label(path)


def test_colour_label_is_refused_but_grey_rgb_label_is_read(files, tmp_path):
    files.write_image(tmp_path / "colour.png", files.random_image(0))
    with pytest.raises(ValueError, match="colour.png is a colour \\(RGB\\) image; labels must be single-channel id maps"):
        read_label(tmp_path / "colour.png")
    grey = files.label_with([0, 1, 2])
    files.write_image(tmp_path / "grey.png", np.repeat(grey[..., None], 3, axis=-1))
    np.testing.assert_array_equal(read_label(tmp_path / "grey.png"), grey)


def test_out_of_range_ids_become_ignore_with_one_warning_per_source(files, tmp_path):
    for name, values in (("a", [0, 1, 7, 7]), ("b", [2, 9, 255])):
        files.write_image(tmp_path / "images" / f"{name}.png", files.random_image(0))
        files.write_image(tmp_path / "labels" / f"{name}.png", files.label_with(values))
    source = create_source(config("custom", tmp_path, custom={"num_classes": 3}), "train")
    with pytest.warns(InvalidLabelWarning, match=r"labels/a.png has label ids 7 \(2 px\) outside the classes \(0\.\.2\)") as caught:
        first = source[0]
        second = source[1]
        source[0]
    assert len(caught) == 1  # Not one per record or per pixel.
    np.testing.assert_array_equal(first["label"], files.label_with([0, 1, 255, 255]))
    np.testing.assert_array_equal(second["label"], files.label_with([2, 255, 255]))
    # label_with fills the rest with values[0]: a has 2 px of 7; b has 1 px of 9.
    assert source.invalid_label_counts == {7: 4, 9: 1}
    assert source.num_records_with_invalid_labels == 3
    assert "3 records had undefined label ids (7: 4 px, 9: 1 px)" in source.invalid_label_summary()


def test_strict_mode_raises_on_out_of_range_ids(files, tmp_path):
    source = make_custom(files, tmp_path, label=files.label_with([0, 1, 5]), strict=True)
    with pytest.raises(ValueError, match=r"labels/a.png: label ids 5 \(1 px\) are not classes of custom \(0\.\.2 after the label map\)"):
        source[0]


@pytest.mark.parametrize("name", ["cityscapes", "camvid", "coco_stuff", "ade20k", "identity"])
def test_opencv_label_mapping_equals_label_map_apply(name):
    from bisenet_jax.data import datasets

    label_map = (datasets.identity_label_map(5) if name == "identity"
                 else datasets.get_dataset_info(name).train_id_map)
    rng = np.random.default_rng(0)
    defined = np.flatnonzero(label_map.valid).astype(np.uint8)
    for raw in (rng.choice(defined, (31, 45)).astype(np.uint8),  # only defined ids
                rng.integers(0, 256, (31, 45), dtype=np.uint8),  # undefined ones too (where there are any)
                rng.integers(0, 256, (40, 60), dtype=np.uint8)[3:34, 5:50]):  # a strided view
        label, invalid = sources.apply_label_map(label_map, raw)
        expected_label, expected_invalid = label_map.apply(raw)
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, expected_label)
        assert invalid == expected_invalid
    assert invalid  # Random ids hit undefined ones: the counting path ran too.


def test_16_bit_label_beyond_255_is_refused(tmp_path):
    Image.fromarray(np.array([[0, 1], [2, 300]], np.uint16)).save(tmp_path / "l16.png")
    with pytest.raises(ValueError, match="l16.png holds I;16 values from 0 to 300"):
        read_label(tmp_path / "l16.png")


# ---------------------------------------------------------------------------------------------
# Factory, grain, pickling, no TensorFlow


def test_create_source_unknown_name_lists_known_ones():
    with pytest.raises(KeyError, match="unknown dataset 'kitti'.*ade20k, array_record, camvid, cityscapes, coco_stuff, custom, demo, tfds"):
        create_source(config("kitti"), "train")


def test_create_source_without_root_says_so():
    with pytest.raises(ValueError, match="data_config.root is empty"):
        create_source(config("camvid"), "train")


def test_plus_concatenates_splits(camvid_generated_root):
    source = create_source(config("camvid", camvid_generated_root), "train+val")
    assert len(source) == 5
    ids = [source[i]["id"] for i in (0, 2, 3, 4)]
    assert ids == ["0001TP_train_000", "0001TP_train_002", "0001TP_val_000", "0001TP_val_001"]
    with pytest.raises(IndexError):
        source[5]


def test_demo_source_through_the_factory():
    cfg = config("demo", demo={"num_train": 3, "num_val": 2, "seed": 0, "image_size": (32, 48)})
    source = create_source(cfg, "val")
    assert len(source) == 2 and source[0]["image"].shape == (32, 48, 3)


def test_register_source_adds_a_reader():
    sources.register_source("test_constant", lambda cfg, split: [{"id": split}])
    try:
        assert create_source(config("test_constant"), "val")[0]["id"] == "val"
        with pytest.raises(ValueError, match="already registered"):
            sources.register_source("test_constant", lambda cfg, split: [])
    finally:
        sources._FACTORIES.pop("test_constant")


def test_sources_pickle_and_feed_grain(camvid_generated_root):
    source = CamVidSource(camvid_generated_root, "train")
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone[1]["label"], source[1]["label"])
    dataset = grain.MapDataset.source(source).map(lambda record: record["id"])
    assert list(dataset) == ["0001TP_train_000", "0001TP_train_001", "0001TP_train_002"]


def test_tfds_source_without_tensorflow_datasets_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # Makes the import fail.
    cfg = config("tfds", tfds={"name": "some_dataset", "num_classes": 3})
    with pytest.raises(ImportError, match=r"needs tensorflow-datasets \(and tensorflow\): pip install 'bisenet_jax\[tfds\]'"):
        create_source(cfg, "train")


def test_folder_readers_never_import_tensorflow(camvid_generated_root):
    code = (
        "import sys, types\n"
        "from bisenet_jax.data.sources import create_source\n"
        "from bisenet_jax.data import array_record, check\n"
        f"cfg = types.SimpleNamespace(name='camvid', root={str(camvid_generated_root)!r})\n"
        "create_source(cfg, 'train')[0]\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

