"""Data: dataset readers, the demo dataset, transforms and grain input pipelines.

The API the trainer and evaluator use (see notes in each module):
  default_data_config()                     the `config.data` ConfigDict
  get_dataset_info(name or data_config)     classes, palette, mean/std, ignore label
  create_source(data_config, split)         random-access source of uint8 records
  create_train_iterator(data_config, global_batch_size, seed)   infinite, sharded, checkpointable
  create_eval_dataset(data_config, split, batch_size)           original-size batches, one pass
  make_global_batch(batch, sharding)        per-process numpy batch -> global jax.Arrays
"""

from __future__ import annotations

from bisenet_jax.data.config import default_data_config
from bisenet_jax.data.datasets import DatasetInfo, get_dataset_info, register_dataset_info
from bisenet_jax.data.demo import DemoSource
from bisenet_jax.data.pipeline import (
    EvalDataset,
    TrainIterator,
    create_eval_dataset,
    create_train_iterator,
    make_global_batch,
    num_examples,
    steps_per_epoch,
)
from bisenet_jax.data.sources import create_source
from bisenet_jax.data.transforms import EvalTransform, TrainTransform

__all__ = [
    "DatasetInfo",
    "DemoSource",
    "EvalDataset",
    "EvalTransform",
    "TrainIterator",
    "TrainTransform",
    "create_eval_dataset",
    "create_source",
    "create_train_iterator",
    "default_data_config",
    "get_dataset_info",
    "make_global_batch",
    "num_examples",
    "register_dataset_info",
    "steps_per_epoch",
]
