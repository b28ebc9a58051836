"""The base reader through the registry: label checks, warnings, strict mode, splits, pickling, grain."""

from __future__ import annotations

import pickle
import subprocess
import sys

import grain
import numpy as np
import pytest

from bisenet_jax.data import create_source
from bisenet_jax.data.decode import ImageReadError
from bisenet_jax.data.kinds.camvid import CamVidSource
from bisenet_jax.data.reader import InvalidLabelWarning


@pytest.fixture
def make_custom(files, tmp_path, data_config):
    """make_custom(image=None, label=None, ...): a one-record custom source in tmp_path."""

    def make(image=None, label=None, image_name="a.png", num_classes=3, strict=False):
        files.write_image(tmp_path / "images" / image_name, files.random_image(0) if image is None else image)
        files.write_image(tmp_path / "labels" / "a.png", files.label_with([0, 1, 2]) if label is None else label)
        return create_source(data_config("custom", tmp_path, custom={"num_classes": num_classes}, strict=strict), "train")

    return make


def test_truncated_image_error_names_the_file(files, tmp_path, make_custom):
    source = make_custom(image=files.random_image(0, files.HEIGHT, files.WIDTH))
    path = tmp_path / "images" / "a.png"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ImageReadError, match=rf"cannot read {path}: .*truncated, corrupt or not an image"):
        source[0]


def test_label_size_mismatch_names_the_file_and_both_sizes(files, tmp_path, make_custom):
    source = make_custom(label=np.zeros((files.HEIGHT, files.WIDTH + 1), np.uint8))
    width, height = files.WIDTH, files.HEIGHT
    expected = rf"labels/a.png: label size {width + 1}x{height} \(WxH\) differs from the image size {width}x{height}"
    with pytest.raises(ValueError, match=expected):
        source[0]


def test_grayscale_and_rgba_images_go_through_a_source(files, tmp_path, make_custom):
    source = make_custom()
    files.write_image(tmp_path / "images" / "a.png", np.full((files.HEIGHT, files.WIDTH), 77, np.uint8))
    assert (source[0]["image"] == 77).all() and source[0]["image"].shape == (files.HEIGHT, files.WIDTH, 3)
    files.write_image(tmp_path / "images" / "a.png", files.random_image(5), mode="RGBA")
    np.testing.assert_array_equal(source[0]["image"], files.random_image(5))


def test_out_of_range_ids_become_ignore_with_one_warning_per_source(files, tmp_path, data_config):
    for name, values in (("a", [0, 1, 7, 7]), ("b", [2, 9, 255])):
        files.write_image(tmp_path / "images" / f"{name}.png", files.random_image(0))
        files.write_image(tmp_path / "labels" / f"{name}.png", files.label_with(values))
    source = create_source(data_config("custom", tmp_path, custom={"num_classes": 3}), "train")
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


def test_strict_mode_raises_on_out_of_range_ids(files, tmp_path, make_custom):
    source = make_custom(label=files.label_with([0, 1, 5]), strict=True)
    with pytest.raises(ValueError, match=r"labels/a.png: label ids 5 \(1 px\) are not classes of custom \(0\.\.2 after the label map\)"):
        source[0]


def test_create_source_without_root_says_so(data_config):
    with pytest.raises(ValueError, match="data_config.root is empty"):
        create_source(data_config("camvid"), "train")


def test_plus_concatenates_splits(camvid_generated_root, data_config):
    source = create_source(data_config("camvid", camvid_generated_root), "train+val")
    assert len(source) == 5
    ids = [source[i]["id"] for i in (0, 2, 3, 4)]
    assert ids == ["0001TP_train_000", "0001TP_train_002", "0001TP_val_000", "0001TP_val_001"]
    with pytest.raises(IndexError):
        source[5]


def test_demo_source_through_the_factory(data_config):
    cfg = data_config("demo", demo={"num_train": 3, "num_val": 2, "seed": 0, "image_size": (32, 48)})
    source = create_source(cfg, "val")
    assert len(source) == 2 and source[0]["image"].shape == (32, 48, 3)


def test_sources_pickle_and_feed_grain(camvid_generated_root):
    source = CamVidSource(camvid_generated_root, "train")
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone[1]["label"], source[1]["label"])
    dataset = grain.MapDataset.source(source).map(lambda record: record["id"])
    assert list(dataset) == ["0001TP_train_000", "0001TP_train_001", "0001TP_train_002"]


def test_tfds_source_without_tensorflow_datasets_says_what_to_install(monkeypatch, data_config):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # Makes the import fail.
    cfg = data_config("tfds", tfds={"name": "some_dataset", "num_classes": 3})
    with pytest.raises(ImportError, match=r"needs tensorflow-datasets \(and tensorflow\): pip install 'bisenet_jax\[tfds\]'"):
        create_source(cfg, "train")


def test_folder_readers_never_import_tensorflow(camvid_generated_root):
    code = (
        "import sys\n"
        "from bisenet_jax.data import check, create_source, default_data_config\n"
        "from bisenet_jax.data.kinds import array_record, tfds\n"
        "cfg = default_data_config()\n"
        f"cfg.name, cfg.root = 'camvid', {str(camvid_generated_root)!r}\n"
        "create_source(cfg, 'train')[0]\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
