"""Cityscapes test-server submission: labelIds at full resolution, server file names, one flat zip."""
from __future__ import annotations

import zipfile

import jax
import numpy as np
import pytest
from PIL import Image

from bisenet_jax import data
from bisenet_jax.data.kinds import cityscapes
from bisenet_jax.evaluation.predict import Predictor
from bisenet_jax.evaluation.submission import train_id_to_label_id, write_submission
from bisenet_jax.models import create_model, init_variables


def test_train_ids_map_back_to_the_label_ids_the_training_map_sends_to_them():
    table = train_id_to_label_id()
    label_ids = table[np.arange(19)]
    assert list(label_ids) == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    train_ids, _ = cityscapes.label_map().apply(label_ids.reshape(1, -1))
    np.testing.assert_array_equal(train_ids.reshape(-1), np.arange(19))


def test_submission_writes_label_ids_named_for_the_server_and_a_flat_zip(tmp_path):
    frames = {"berlin": ["berlin_000000_000019", "berlin_000001_000019"], "bonn": ["bonn_000004_000019"]}
    rng = np.random.default_rng(0)
    for city, names in frames.items():
        for name in names:
            path = tmp_path / "leftImg8bit" / "test" / city / f"{name}_leftImg8bit.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)).save(path)
    model = create_model("bisenetv2", 19, aux_heads=False)
    variables = init_variables(model, 0, (1, 64, 128, 3))
    predictor = Predictor(model, variables, data.get_dataset_info("cityscapes"))

    archive = write_submission(predictor, [tmp_path / "leftImg8bit" / "test"], tmp_path / "submission")

    expected = sorted(f"{n}_leftImg8bit.png" for names in frames.values() for n in names)
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == expected
    table = train_id_to_label_id()
    for city, names in frames.items():
        for name in names:
            written = np.asarray(Image.open(tmp_path / "submission" / f"{name}_leftImg8bit.png"))
            image = np.asarray(Image.open(tmp_path / "leftImg8bit" / "test" / city / f"{name}_leftImg8bit.png"))
            assert written.shape == (64, 128) and written.dtype == np.uint8  # full resolution, one channel
            np.testing.assert_array_equal(written, table[predictor(image[None])[0]])
            assert set(np.unique(written)) <= set(cityscapes.LABEL_TO_TRAIN_ID)


def test_submission_refuses_a_model_of_another_dataset(tmp_path):
    model = create_model("bisenetv2", 11, aux_heads=False)
    variables = init_variables(model, 0)
    predictor = Predictor(model, variables, data.get_dataset_info("camvid"))
    with pytest.raises(ValueError, match="19-class Cityscapes model"):
        write_submission(predictor, [tmp_path], tmp_path / "out")
