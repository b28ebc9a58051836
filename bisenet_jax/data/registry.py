"""The one name -> dataset kind registry: `config.data.name` selects a kind, the kind does the rest.

  create_source(data_config, split)     the kind's reader for one split ("a+b" concatenates);
                                        `.info` is the dataset's DatasetInfo
  get_dataset_info(name or data_config) the facts without opening a split (a name is enough for
                                        the kinds with fixed facts, e.g. to read a class count)
  register_kind(DatasetKind(...))       adds a kind of your own

The built-in kinds are the `KIND`s of the modules in `bisenet_jax/data/kinds/`; their
`default_config`s make the sub-configs of `default_data_config()`.
"""

from __future__ import annotations

from typing import Any

from bisenet_jax.data.info import DatasetInfo
from bisenet_jax.data.kinds import ade20k, array_record, camvid, cityscapes, coco_stuff, custom, demo, tfds
from bisenet_jax.data.reader import ConcatSource, DatasetKind

_KINDS: dict[str, DatasetKind] = {}


def register_kind(kind: DatasetKind, overwrite: bool = False) -> DatasetKind:
    """Makes `kind` selectable as `config.data.name = kind.name`. Returns it."""
    if kind.name in _KINDS and not overwrite:
        raise ValueError(f"dataset kind {kind.name!r} is already registered (pass overwrite=True to replace it)")
    _KINDS[kind.name] = kind
    return kind


for _module in (cityscapes, camvid, coco_stuff, ade20k, custom, tfds, array_record, demo):
    register_kind(_module.KIND)


def known_datasets() -> list[str]:
    """The names `config.data.name` accepts."""
    return sorted(_KINDS)


def registered_kinds() -> list[DatasetKind]:
    """Every registered kind, in registration order."""
    return list(_KINDS.values())


def dataset_kind(name: str) -> DatasetKind:
    """The kind registered as `name`; a KeyError naming data.name and the known kinds otherwise."""
    if name not in _KINDS:
        raise KeyError(f"unknown dataset {name!r} in data.name; known datasets: {', '.join(known_datasets())}")
    return _KINDS[name]


def create_source(data_config: Any, split: str):
    """The random-access source for data_config.name and `split` ("a+b" concatenates splits)."""
    kind = dataset_kind(data_config.name)
    if "+" in split:
        return ConcatSource([kind.open_source(data_config, part) for part in split.split("+")])
    return kind.open_source(data_config, split)


def get_dataset_info(name_or_data_config: str | Any) -> DatasetInfo:
    """The DatasetInfo of a kind with fixed facts (by name), or of any data config.

    With a config, `config.name` selects the kind; custom and tfds read their classes from
    `config.<name>`, array_record from the shards' dataset_info.json under `config.root`.
    `create_source(config, split).info` gives the same facts.
    """
    if isinstance(name_or_data_config, str):
        return dataset_kind(name_or_data_config).dataset_info()
    return dataset_kind(name_or_data_config.name).dataset_info(name_or_data_config)
