"""Packing sources into ArrayRecord shards and reading them back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bisenet_jax.data import create_source, get_dataset_info
from bisenet_jax.data.kinds.array_record import (
    ArrayRecordSource,
    decode_record,
    encode_record,
    read_dataset_info,
    write_array_record,
)
from bisenet_jax.data.kinds.camvid import CamVidSource


def test_records_round_trip_exactly(camvid_generated_root, tmp_path):
    source = CamVidSource(camvid_generated_root, "train")
    paths = write_array_record(source, tmp_path / "packed", "train", num_shards=2)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["train-00000-of-00002.array_record", "train-00001-of-00002.array_record"]
    packed = ArrayRecordSource(tmp_path / "packed", "train")
    assert len(packed) == len(source) == 3
    for index in range(3):  # PNG is lossless: same pixels, same train-id labels, same order.
        original, restored = source[index], packed[index]
        np.testing.assert_array_equal(restored["image"], original["image"])
        np.testing.assert_array_equal(restored["label"], original["label"])
        assert restored["id"] == original["id"]
    assert 255 in packed[0]["label"]  # CamVid's Unlabelled (11) was stored as ignore.


def test_dataset_info_is_saved_with_the_shards(camvid_generated_root, tmp_path, data_config):
    write_array_record(CamVidSource(camvid_generated_root, "train"), tmp_path, "train")
    write_array_record(CamVidSource(camvid_generated_root, "val"), tmp_path, "val", image_format="jpeg")
    content = json.loads((tmp_path / "dataset_info.json").read_text())
    assert content["splits"] == {
        "train": {"num_records": 3, "num_shards": 1, "image_format": "png"},
        "val": {"num_records": 2, "num_shards": 1, "image_format": "jpeg"},
    }
    camvid = get_dataset_info("camvid")
    config = data_config("array_record", tmp_path)
    info = get_dataset_info(config)
    assert info.name == "camvid" and info.class_names == camvid.class_names and info.mean == camvid.mean
    np.testing.assert_array_equal(info.palette, camvid.palette)
    assert info.label_map is None  # Shards hold train ids already.
    val = create_source(config, "val")
    assert len(val) == 2 and val[1]["id"] == "0001TP_val_001"
    np.testing.assert_array_equal(val[1]["label"], CamVidSource(camvid_generated_root, "val")[1]["label"])


def test_rewriting_a_split_removes_its_old_shards(camvid_generated_root, tmp_path):
    source = CamVidSource(camvid_generated_root, "train")
    write_array_record(source, tmp_path, "train", num_shards=3)
    write_array_record(source, tmp_path, "train", num_shards=1)
    assert sorted(p.name for p in tmp_path.glob("*.array_record")) == ["train-00000-of-00001.array_record"]
    assert len(ArrayRecordSource(tmp_path, "train")) == 3


def test_parallel_packing_matches_serial(camvid_generated_root, tmp_path):
    source = CamVidSource(camvid_generated_root, "train")
    write_array_record(source, tmp_path / "parallel", "train", num_shards=2, num_threads=2)
    packed = ArrayRecordSource(tmp_path / "parallel", "train")
    assert [packed[i]["id"] for i in range(3)] == [source[i]["id"] for i in range(3)]
    np.testing.assert_array_equal(packed[2]["image"], source[2]["image"])


def test_missing_split_and_missing_info_are_explained(camvid_generated_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset_info.json does not exist: data_config.root must be a folder written by write_array_record"):
        ArrayRecordSource(tmp_path, "train")
    write_array_record(CamVidSource(camvid_generated_root, "train"), tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=r"no ArrayRecord shards for split 'val' .*found \['train-00000-of-00001.array_record'\]"):
        ArrayRecordSource(tmp_path, "val")


def test_corrupt_record_is_reported():
    record = {"image": np.zeros((4, 5, 3), np.uint8), "label": np.ones((4, 5), np.uint8), "id": "x"}
    data = encode_record(record)
    image, label, record_id = decode_record(data)
    assert image.shape == (4, 5, 3) and (label == 1).all() and record_id == "x"
    with pytest.raises(ValueError, match="shard-7 is truncated"):
        decode_record(data[:-10], where="shard-7")
    with pytest.raises(ValueError, match="not a bisenet_jax record"):
        decode_record(b"garbage" * 4)


def test_encode_rejects_records_that_break_the_contract():
    with pytest.raises(ValueError, match=r"label must be uint8 \(4, 5\)"):
        encode_record({"image": np.zeros((4, 5, 3), np.uint8), "label": np.zeros((5, 4), np.uint8), "id": "bad"})


def test_read_dataset_info_from_written_folder(camvid_generated_root, tmp_path):
    write_array_record(CamVidSource(camvid_generated_root, "val"), tmp_path, "val")
    assert read_dataset_info(tmp_path).num_classes == 11
