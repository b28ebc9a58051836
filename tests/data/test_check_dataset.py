"""check_dataset: counts, sizes, histograms and problems, through the library and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bisenet_jax.data import default_data_config
from bisenet_jax.data.check import check_dataset


def make_config(name, root="", **options):
    """default_data_config() for kind `name`, with `options` set in config.<name>."""
    config = default_data_config()
    config.name, config.root = name, str(root)
    if options:
        config[name].update(options)
    return config


def custom_config(root, num_classes=3, **options):
    return make_config("custom", root, num_classes=num_classes, **options)


def test_clean_dataset_histogram_counts_every_pixel(files, tmp_path):
    files.write_image(tmp_path / "images" / "a.png", files.random_image(0))  # 6x8
    files.write_image(tmp_path / "labels" / "a.png", files.label_with([0, 1, 1, 255]))
    files.write_image(tmp_path / "images" / "b.png", files.random_image(1, 4, 5))
    files.write_image(tmp_path / "labels" / "b.png", files.label_with([2, 0], 4, 5))
    report = check_dataset(custom_config(tmp_path, class_names="sky,road,car"), splits=["train"])
    assert report.ok
    split = report.splits[0]
    assert split.num_records == split.num_checked == 2
    assert split.sizes == {(8, 6): 1, (5, 4): 1}
    # a: 45 px of 0 (48 - 2 - 1), 2 of 1, 1 ignore; b: 1 px of 0, the other 19 of 2 (the fill).
    assert split.class_pixels.tolist() == [45 + 1, 2, 19]
    assert split.class_images.tolist() == [2, 1, 1]
    assert split.ignore_pixels == 1
    text = report.format()
    assert "records: 2" in text and "8x6: 1, 5x4: 1" in text
    assert "  1 road" in text and "RESULT: ok" in text


def test_problems_are_listed_and_make_the_report_fail(files, tmp_path):
    names = ["bad_ids", "mismatch", "truncated", "fine"]
    for name in names:
        files.write_image(tmp_path / "images" / f"{name}.png", files.random_image(0, 16, 16))
        files.write_image(tmp_path / "labels" / f"{name}.png", files.label_with([0, 1, 2], 16, 16))
    files.write_image(tmp_path / "labels" / "bad_ids.png", files.label_with([0, 3, 3, 200], 16, 16))
    files.write_image(tmp_path / "labels" / "mismatch.png", files.label_with([0], 16, 17))
    truncated = tmp_path / "images" / "truncated.png"
    truncated.write_bytes(truncated.read_bytes()[:120])
    report = check_dataset(custom_config(tmp_path), splits=["train"])
    assert not report.ok
    split = report.splits[0]
    assert split.invalid_ids == {3: 2, 200: 1}
    assert split.invalid_files == [(str(tmp_path / "labels" / "bad_ids.png"), {3: 2, 200: 1})]
    assert len(split.errors) == 2
    text = report.format()
    assert "label ids outside the classes and not ignore in 1 files (3: 2 px, 200: 1 px)" in text
    assert "labels/bad_ids.png: 3, 200" in text
    assert "label size 17x16 (WxH) differs from the image size 16x16" in text
    assert f"cannot read {truncated}" in text
    assert text.endswith("RESULT: problems found")


def test_split_that_cannot_be_opened_is_reported(tmp_path):
    report = check_dataset(make_config("camvid", tmp_path), splits=["train"])
    assert not report.ok
    assert "CamVid: folder" in report.splits[0].open_error and "does not exist" in report.splits[0].open_error
    assert "ERROR: cannot open the split" in report.format()


def test_unknown_dataset_is_reported_not_raised():
    report = check_dataset(make_config("nope"))
    assert not report.ok and "unknown dataset 'nope'" in report.format()


def test_cli_exit_status_and_overrides(files, tmp_path, capsys, load_script):
    files.write_image(tmp_path / "images" / "train" / "a.png", files.random_image(0))
    files.write_image(tmp_path / "labels" / "train" / "a.png", files.label_with([1, 2, 3]))
    script = load_script("check_dataset")
    args = ["--name", "custom", "--root", str(tmp_path), "--splits", "train", "--set", "custom.num_classes=3"]
    assert script.main(args) == 1  # Label value 3 is not a class of a 3-class dataset...
    assert "ERROR: label ids outside the classes" in capsys.readouterr().out
    assert script.main(args + ["--set", "custom.label_map=1:0,2:1,3:2"]) == 0  # ... unless mapped.
    out = capsys.readouterr().out
    assert "records: 1" in out and "RESULT: ok" in out
    with pytest.raises(SystemExit) as error:
        script.main(args + ["--set", "custom.num_classes"])
    assert error.value.code == 2


def test_demo_dataset_checks_clean():
    config = make_config("demo", num_train=4, num_val=2, seed=0, image_size=(32, 40))
    report = check_dataset(config, splits=["val"])
    assert report.ok and report.splits[0].sizes == {(40, 32): 2}
    assert report.splits[0].class_pixels.sum() + report.splits[0].ignore_pixels == 2 * 32 * 40


def test_real_camvid_val_checks_clean(camvid_root, capsys, load_script):
    script = load_script("check_dataset")
    assert script.main(["--name", "camvid", "--root", str(camvid_root), "--splits", "val", "--max_images", "30"]) == 0
    out = capsys.readouterr().out
    assert "records: 101 (30 checked)" in out and "480x360: 30" in out
    assert "    3 Road" in out and "RESULT: ok" in out


def test_real_camvid_histogram_matches_raw_label_counts(camvid_root):
    config = make_config("camvid", camvid_root)
    split = check_dataset(config, splits=["train"], max_records=5).splits[0]
    # Recount from the raw files: 0..10 classes, 11 ignored.
    paths = sorted((camvid_root / "trainannot").glob("*.png"))[:5]
    raw = np.concatenate([np.asarray(Image.open(path)).ravel() for path in paths])
    counts = np.bincount(raw, minlength=256)
    assert split.class_pixels.tolist() == counts[:11].tolist()
    assert split.ignore_pixels == counts[11] + counts[255]
