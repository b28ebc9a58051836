"""Data: dataset kinds behind one registry, decoding, transforms and grain input pipelines.

Layout (each floor imports only the ones above it in this list):
  decode.py      image and label files -> arrays (training, ArrayRecord shards, predict)
  info.py        DatasetInfo, LabelMap, palettes: what every kind shares
  reader.py      the base reader (LabelledImageSource, FileSource), CachedSource, DatasetKind, layout helpers
  kinds/         one module per dataset kind: reader, DatasetInfo, config.data.<kind> defaults
  registry.py    name -> kind: create_source, get_dataset_info, register_kind
  config.py      default_data_config(), assembled from the kinds' defaults
  transforms.py, pipeline.py   augmentation and grain pipelines;  check.py   dataset reports

The API the trainer and evaluator use:
  default_data_config()                     the `config.data` ConfigDict
  create_source(data_config, split)         random-access source of uint8 records; `.info` holds
                                            classes, palette, mean/std, ignore label
  get_dataset_info(name or data_config)     the same facts without opening a split
  create_train_iterator(data_config, global_batch_size, seed)   infinite, sharded, checkpointable
  create_eval_dataset(data_config, split, batch_size)           original-size batches, one pass
  make_global_batch(batch, sharding)        per-process numpy batch -> global jax.Arrays
"""

from __future__ import annotations

from bisenet_jax.data.config import default_data_config
from bisenet_jax.data.decode import read_image, read_label
from bisenet_jax.data.info import DatasetInfo
from bisenet_jax.data.kinds.demo import DemoSource
from bisenet_jax.data.pipeline import (
    EvalDataset,
    TrainIterator,
    cache_bytes,
    create_eval_dataset,
    create_train_iterator,
    make_global_batch,
    num_examples,
    steps_per_epoch,
)
from bisenet_jax.data.reader import DatasetKind
from bisenet_jax.data.registry import create_source, dataset_kind, get_dataset_info, known_datasets, register_kind
from bisenet_jax.data.transforms import EvalTransform, TrainTransform

__all__ = [
    "DatasetInfo",
    "DatasetKind",
    "DemoSource",
    "EvalDataset",
    "EvalTransform",
    "TrainIterator",
    "TrainTransform",
    "cache_bytes",
    "create_eval_dataset",
    "create_source",
    "create_train_iterator",
    "dataset_kind",
    "default_data_config",
    "get_dataset_info",
    "known_datasets",
    "make_global_batch",
    "num_examples",
    "read_image",
    "read_label",
    "register_kind",
    "steps_per_epoch",
]
