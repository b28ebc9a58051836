"""The one name -> dataset kind registry: lookup, errors, facts from a source, config defaults."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bisenet_jax.data import (
    DatasetKind,
    create_source,
    dataset_kind,
    default_data_config,
    get_dataset_info,
    known_datasets,
    register_kind,
)
from bisenet_jax.data import registry
from bisenet_jax.data.info import DatasetInfo, make_dataset_info
from bisenet_jax.data.kinds import ade20k, array_record, camvid, cityscapes, coco_stuff, custom, demo, tfds
from bisenet_jax.train.config import base_config, set_dataset

BUILT_IN = ("ade20k", "array_record", "camvid", "cityscapes", "coco_stuff", "custom", "demo", "tfds")
MODULES = {"ade20k": ade20k, "array_record": array_record, "camvid": camvid, "cityscapes": cityscapes,
           "coco_stuff": coco_stuff, "custom": custom, "demo": demo, "tfds": tfds}  # fmt: skip


def assert_same_info(a: DatasetInfo, b: DatasetInfo) -> None:
    for field in dataclasses.fields(DatasetInfo):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if field.name == "label_map" and x is not None and y is not None:
            np.testing.assert_array_equal(x.lut, y.lut)
            np.testing.assert_array_equal(x.valid, y.valid)
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y, field.name


def test_every_built_in_kind_is_registered_once_under_its_name():
    assert known_datasets() == list(BUILT_IN)
    kinds = registry.registered_kinds()
    assert len(kinds) == len({kind.name for kind in kinds})
    for name, module in MODULES.items():
        assert dataset_kind(name) is module.KIND and module.KIND.name == name


@pytest.mark.parametrize("lookup", [get_dataset_info, dataset_kind])
def test_unknown_name_names_the_field_and_the_known_kinds(lookup):
    with pytest.raises(KeyError, match="unknown dataset 'citiscapes' in data.name; known datasets: " + ", ".join(BUILT_IN)):
        lookup("citiscapes")


def test_create_source_with_an_unknown_name_names_the_field_and_the_known_kinds(data_config):
    with pytest.raises(KeyError, match="unknown dataset 'kitti' in data.name; known datasets: ade20k, array_record, camvid"):
        create_source(data_config("kitti"), "train")


def test_config_defined_kinds_need_the_config():
    for name in ("custom", "tfds", "array_record"):
        assert dataset_kind(name).info is None
        with pytest.raises(KeyError, match=rf"call get_dataset_info\(data_config\) instead of get_dataset_info\('{name}'\)"):
            get_dataset_info(name)


def test_fixed_facts_live_in_the_kind_module():
    for name in ("cityscapes", "camvid", "coco_stuff", "ade20k", "demo"):
        assert get_dataset_info(name) is MODULES[name].INFO and get_dataset_info(name).name == name


@pytest.mark.parametrize("name", ["cityscapes", "camvid", "coco_stuff", "ade20k"])
def test_a_folder_source_carries_the_facts_get_dataset_info_gives(name, request, data_config):
    root = request.getfixturevalue(f"{'camvid_generated' if name == 'camvid' else name}_root")
    config = data_config(name, root)
    assert create_source(config, "train").info is get_dataset_info(config) is get_dataset_info(name)


def test_demo_source_carries_the_facts_get_dataset_info_gives(data_config):
    config = data_config("demo", demo={"num_val": 2})
    assert create_source(config, "val").info is get_dataset_info(config) is get_dataset_info("demo")


def test_custom_source_carries_the_declared_facts(files, tmp_path, data_config):
    files.write_image(tmp_path / "images" / "a.png", files.random_image(0))
    files.write_image(tmp_path / "labels" / "a.png", files.label_with([0, 1]))
    config = data_config("custom", tmp_path, custom={"num_classes": 2, "class_names": "x,y", "label_map": "0:1,1:0"})
    assert_same_info(create_source(config, "train").info, get_dataset_info(config))
    assert create_source(config, "train").info.class_names == ("x", "y")


def test_array_record_source_carries_the_facts_of_its_shards(camvid_generated_root, tmp_path, data_config):
    array_record.write_array_record(camvid.CamVidSource(camvid_generated_root, "train"), tmp_path, "train")
    config = data_config("array_record", tmp_path)
    info = create_source(config, "train").info
    assert_same_info(info, get_dataset_info(config))
    assert info.name == "camvid" and info.class_names == camvid.INFO.class_names


def test_train_plus_val_sources_carry_the_facts_too(camvid_generated_root, data_config):
    assert create_source(data_config("camvid", camvid_generated_root), "train+val").info is camvid.INFO


def test_default_data_config_takes_each_kinds_options_from_its_module():
    config = default_data_config()
    for name in BUILT_IN:
        module_defaults = MODULES[name].KIND.default_config
        if module_defaults is None:
            assert name not in config  # coco_stuff, ade20k, array_record have no options.
        else:
            assert config[name].to_dict() == module_defaults().to_dict()
    assert config.camvid.use_list_file is None and config.cityscapes.use_train_id_files is False
    assert config.custom.num_classes == 0 and config.custom.ignore_label == 255 and config.custom.image_dir == "images"
    assert config.tfds.label_key == "segmentation_mask" and config.tfds.num_classes == 0
    assert (config.demo.num_train, config.demo.num_val, tuple(config.demo.image_size)) == (2000, 200, (120, 160))


def test_kind_options_keep_their_types_for_command_line_overrides():
    config = default_data_config()
    config.camvid.use_list_file = True  # A placeholder(bool) takes a bool ...
    config.custom.num_classes = 3
    with pytest.raises(TypeError):
        config.custom.num_classes = "three"  # ... and a typed field refuses another type.


def test_register_kind_adds_a_reader_and_refuses_to_replace_silently(data_config):
    info = make_dataset_info("test_constant", num_classes=2)

    class ConstantSource(list):
        def __init__(self, split):
            super().__init__([{"id": split}])
            self.info = info

    kind = DatasetKind("test_constant", lambda config, split: ConstantSource(split), info=info)
    try:
        assert register_kind(kind) is kind
        assert create_source(data_config("test_constant"), "val")[0]["id"] == "val"
        assert get_dataset_info("test_constant") is info and "test_constant" in known_datasets()
        with pytest.raises(ValueError, match="dataset kind 'test_constant' is already registered"):
            register_kind(DatasetKind("test_constant", lambda config, split: [], info=info))
        replacement = DatasetKind("test_constant", kind.open_source, info=make_dataset_info("test_constant", 3))
        register_kind(replacement, overwrite=True)
        assert get_dataset_info("test_constant").num_classes == 3
    finally:
        registry._KINDS.pop("test_constant", None)


def test_a_kind_has_either_fixed_or_config_defined_facts():
    with pytest.raises(ValueError, match="give exactly one of `info`"):
        DatasetKind("neither", lambda config, split: [])


def test_set_dataset_takes_the_class_count_of_kinds_with_fixed_facts():
    config = base_config()
    set_dataset(config, "camvid", "/data/camvid")
    assert (config.data.name, config.data.root, config.model.num_classes) == ("camvid", "/data/camvid", 11)
    set_dataset(config, "custom")
    assert config.data.name == "custom" and config.model.num_classes == 11  # Declared in config.data.custom.
    with pytest.raises(KeyError, match="unknown dataset 'kitti' in data.name"):
        set_dataset(config, "kitti")
