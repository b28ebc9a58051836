"""TFDS datasets with an image feature and a segmentation-mask feature, classes declared in the config.

config.data.tfds: name ("my_dataset:1.0.0"), data_dir, image_key, label_key, id_key (optional
feature used as the record id), and the declared classes (num_classes, required; ignore_label,
label_map, class_names, mean, std: see info.declared_classes_config). The dataset must be
prepared in array_record format, which is what gives TFDS random access. tensorflow-datasets is
an optional extra, imported only when a TFDS source is opened.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from bisenet_jax.data.info import DatasetInfo, declared_classes_config, info_from_declared_classes
from bisenet_jax.data.reader import DatasetKind, LabelledImageSource

_TFDS_MISSING = (
    "the TFDS reader needs tensorflow-datasets (and tensorflow): pip install 'bisenet_jax[tfds]'. "
    "The folder readers (cityscapes, camvid, coco_stuff, ade20k, custom) do not need it."
)


def _import_tfds():
    try:
        import tensorflow_datasets as tfds  # Optional extra, imported only for the TFDS path.
    except ImportError as error:
        raise ImportError(f"{_TFDS_MISSING} ({error})") from error
    return tfds


class TfdsSource(LabelledImageSource):
    """`tfds.data_source` over any dataset with an image feature and a segmentation-mask feature.

    The dataset must be prepared in array_record format (`download_and_prepare(file_format="array_record")`
    or `tfds build --file_format=array_record`), which is what gives TFDS random access.
    """

    def __init__(
        self,
        name: str,
        split: str,
        info: DatasetInfo,
        data_dir: str | None = None,
        image_key: str = "image",
        label_key: str = "segmentation_mask",
        id_key: str | None = None,
        strict: bool = False,
    ):
        super().__init__(info, split, info.label_map, strict)
        tfds = _import_tfds()
        builder = tfds.builder(name, data_dir=data_dir or None)
        splits = sorted(builder.info.splits.keys())
        if not splits:
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir}: run `tfds build {name} "
                "--file_format=array_record` (or builder.download_and_prepare(file_format='array_record'))."
            )
        if split == "val" and "val" not in splits and "validation" in splits:
            split = "validation"
        if split.split("[")[0] not in splits:  # "train[:10%]" slicing is allowed.
            raise ValueError(f"TFDS dataset {name!r} has no split {split!r}; its splits: {splits}")
        features = builder.info.features
        for key, field in ((image_key, "image_key"), (label_key, "label_key"), (id_key, "id_key")):
            if key and key not in features:
                raise KeyError(
                    f"TFDS dataset {name!r} has no feature {key!r} (data_config.tfds.{field}); "
                    f"its features: {sorted(features.keys())}"
                )
        try:
            self._source = tfds.data_source(name, split=split, data_dir=data_dir or None)
        except Exception as error:  # TFDS raises several types here; the hint is the same.
            raise ValueError(
                f"cannot open TFDS dataset {name!r} split {split!r} (splits: {splits}) for random access: {error}. "
                f"It must be prepared with file_format='array_record'."
            ) from error
        self.name, self.tfds_split = name, split
        self.image_key, self.label_key, self.id_key = image_key, label_key, id_key

    def __len__(self) -> int:
        return len(self._source)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, str, str]:
        example = self._source[index]
        where = self._where(index)
        image = np.asarray(example[self.image_key])
        if image.ndim == 2 or image.shape[-1] == 1:
            image = np.repeat(image.reshape(image.shape[:2])[..., None], 3, axis=-1)
        elif image.shape[-1] == 4:
            image = image[..., :3]
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(
                f"{where}: feature {self.image_key!r} has shape {image.shape}, expected (H, W, 3) or (H, W, 1)"
            )
        label = np.asarray(example[self.label_key])
        if label.ndim == 3 and label.shape[-1] == 1:
            label = label[..., 0]
        if label.ndim != 2:
            raise ValueError(
                f"{where}: feature {self.label_key!r} has shape {label.shape}, expected (H, W) or (H, W, 1)"
            )
        if label.dtype != np.uint8:
            if label.size and (label.min() < 0 or label.max() > 255):
                raise ValueError(f"{where}: mask values {label.min()}..{label.max()} do not fit uint8 ids 0..255")
            label = label.astype(np.uint8)
        record_id = example[self.id_key] if self.id_key else f"{self.tfds_split}_{index:06d}"
        if isinstance(record_id, bytes):
            record_id = record_id.decode("utf-8")
        return image.astype(np.uint8, copy=False), label, str(record_id), where

    def _where(self, index: int) -> str:
        return f"TFDS {self.name} {self.tfds_split}[{index}]"

    def __repr__(self) -> str:
        return f"TfdsSource({self.name!r}, split={self.tfds_split!r}, {len(self)} examples)"


def default_config() -> ml_collections.ConfigDict:
    """config.data.tfds."""
    config = ml_collections.ConfigDict()
    config.name = ""  # e.g. "my_dataset:1.0.0"
    config.image_key = "image"
    config.label_key = "segmentation_mask"
    config.data_dir = ""  # Empty = the TFDS default (~/tensorflow_datasets).
    config.id_key = ""  # Optional feature used as the record id.
    config.update(declared_classes_config())
    return config


def info_from_config(data_config: Any) -> DatasetInfo:
    options = data_config.tfds
    return info_from_declared_classes("tfds", options, f"TFDS dataset {options.name!r}")


def open_source(data_config: Any, split: str) -> TfdsSource:
    options = data_config.tfds
    if not options.name:
        raise ValueError("data_config.tfds.name is empty: set it to the TFDS dataset name, e.g. 'my_dataset:1.0.0'")
    return TfdsSource(
        options.name,
        split,
        info=info_from_config(data_config),
        data_dir=options.data_dir or None,
        image_key=options.image_key,
        label_key=options.label_key,
        id_key=options.id_key or None,
        strict=data_config.strict,
    )


KIND = DatasetKind("tfds", open_source, info_from_config=info_from_config, default_config=default_config)
