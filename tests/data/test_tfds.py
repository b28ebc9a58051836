"""The TFDS reader on a tiny segmentation dataset the test builds (array_record format)."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from bisenet_jax.data import create_source, default_data_config, get_dataset_info

tfds = pytest.importorskip("tensorflow_datasets", reason="the TFDS extra is not installed: pip install 'bisenet_jax[tfds]'")

HEIGHT, WIDTH = 5, 7
SPLIT_SIZES = {"train": 3, "validation": 2}


def example(split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and raw mask of one example: masks hold 1..3 (as in oxford_iiit_pet) plus a stray 9."""
    rng = np.random.default_rng((len(split), index))
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    mask = rng.integers(1, 4, (HEIGHT, WIDTH, 1), dtype=np.uint8)
    mask[0, 0, 0] = 9 if index == 0 else 1
    return image, mask


def png(array: np.ndarray) -> io.BytesIO:
    """PNG file object: TFDS stores it as is, so building the dataset never imports TensorFlow."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


class BisenetTinySegmentation(tfds.core.GeneratorBasedBuilder):
    """5x7 images with 3-class masks, written by the test (registered as bisenet_tiny_segmentation)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "segmentation_mask": tfds.features.Image(shape=(None, None, 1)),
                    "file_name": tfds.features.Text(),
                }
            )
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in SPLIT_SIZES}

    def _generate_examples(self, split):
        for index in range(SPLIT_SIZES[split]):
            image, mask = example(split, index)
            yield index, {"image": png(image), "segmentation_mask": png(mask[..., 0]), "file_name": f"{split}_{index}"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    BisenetTinySegmentation(data_dir=str(data_dir)).download_and_prepare(file_format="array_record")
    return str(data_dir)


def tfds_config(data_dir, **options):
    tfds_options = {"name": "bisenet_tiny_segmentation", "data_dir": data_dir, "num_classes": 3, "label_map": "1:0,2:1,3:2"}
    config = default_data_config()
    config.name = "tfds"
    config.tfds.update(tfds_options | options)
    return config


def records_by_id(source) -> dict:
    return {record["id"]: record for record in (source[i] for i in range(len(source)))}


@pytest.mark.filterwarnings("ignore::bisenet_jax.data.reader.InvalidLabelWarning")  # The stray 9.
def test_tfds_source_reads_images_and_maps_masks(data_dir):
    source = create_source(tfds_config(data_dir, id_key="file_name"), "train")
    records = records_by_id(source)  # TFDS may store examples in another order.
    assert sorted(records) == ["train_0", "train_1", "train_2"]
    image, mask = example("train", 1)
    record = records["train_1"]
    np.testing.assert_array_equal(record["image"], image)
    np.testing.assert_array_equal(record["label"], mask[..., 0] - 1)  # 1..3 -> 0..2
    assert record["label"].dtype == np.uint8


def test_tfds_val_means_validation_and_ids_default_to_the_index(data_dir):
    source = create_source(tfds_config(data_dir), "val")
    assert len(source) == 2 and source[1]["id"] == "validation_000001"


def test_tfds_undefined_mask_values_become_ignore_with_a_warning(data_dir):
    source = create_source(tfds_config(data_dir, id_key="file_name"), "train")
    with pytest.warns(UserWarning, match=r"TFDS bisenet_tiny_segmentation train\[\d\] has label ids 9 \(1 px\)"):
        records = records_by_id(source)
    assert records["train_0"]["label"][0, 0] == 255 and records["train_1"]["label"][0, 0] == 0
    assert source.invalid_label_counts == {9: 1}


def test_tfds_dataset_info_comes_from_the_config(data_dir):
    config = tfds_config(data_dir, class_names="background,pet,border")
    info = get_dataset_info(config)
    assert info.num_classes == 3 and info.class_names == ("background", "pet", "border")
    source_info = create_source(config, "train").info  # The same facts through the source.
    assert (source_info.name, source_info.class_names, source_info.mean) == (info.name, info.class_names, info.mean)
    np.testing.assert_array_equal(source_info.label_map.lut, info.label_map.lut)


def test_tfds_unknown_feature_lists_the_features(data_dir):
    with pytest.raises(KeyError, match=r"no feature 'mask' \(data_config.tfds.label_key\); its features: \['file_name', 'image', 'segmentation_mask'\]"):
        create_source(tfds_config(data_dir, label_key="mask"), "train")


def test_tfds_unknown_split_lists_the_splits(data_dir):
    with pytest.raises(ValueError, match=r"has no split 'test'; its splits: \['train', 'validation'\]"):
        create_source(tfds_config(data_dir), "test")


def test_tfds_source_pickles_for_grain_workers(data_dir):
    source = create_source(tfds_config(data_dir, id_key="file_name", label_map="1:0,2:1,3:2,9:255"), "val")
    clone = pickle.loads(pickle.dumps(source))
    assert clone[0]["id"] == source[0]["id"]
    np.testing.assert_array_equal(clone[1]["label"], source[1]["label"])
