"""Custom datasets: image/label pairs from a list file or two folders, classes declared in the config.

config.data.custom:
  list_file   `image,label` lines (or `image label`); the file is relative to root, its paths to
              the list file's folder (or absolute); "{split}" in the name is replaced by the split
  image_dir, label_dir   folders relative to root (used when list_file is empty), matched by
              relative path and file stem; "{split}" is replaced, and without it the
              `<dir>/<split>` subfolder is used when it exists
  label_suffix   label stem = image stem + suffix (e.g. "_mask")
  num_classes (required), ignore_label, label_map ("0:255,1:0" or a dict; raw ids not listed are
              undefined), class_names ("a,b" or a sequence), mean, std: see info.declared_classes_config
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from bisenet_jax import paths
from bisenet_jax.data.decode import IMAGE_EXTENSIONS
from bisenet_jax.data.info import DatasetInfo, declared_classes_config, info_from_declared_classes
from bisenet_jax.data.reader import (
    DatasetKind,
    FileSource,
    check_pairs_exist,
    missing_labels_error,
    read_pairs,
    require_dir,
    require_nonempty,
    resolve,
)
from bisenet_jax.paths import Path

LAYOUT = """  a list file of `image,label` lines (paths relative to the list file's folder, or absolute), or
  <root>/<image_dir>[/<split>]/**/<name>.<jpg|png|...> with <root>/<label_dir>[/<split>]/**/<name><label_suffix>.png"""


def samples_from_list(list_file: str | os.PathLike, split: str = "") -> list[tuple[str, str, str]]:
    """(image, label, id) from a list file (local or gs://); relative paths are relative to its folder."""
    list_file = paths.path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"custom dataset: list file {list_file} does not exist. Expected:\n{LAYOUT}")
    base = list_file.parent
    pairs = [(resolve(base, image), resolve(base, label)) for image, label in read_pairs(list_file)]
    require_nonempty(pairs, "custom dataset", split, list_file, "`image,label` lines")
    check_pairs_exist(pairs, f"custom list file {list_file}", hint=f"relative paths are taken from {base}")
    return [(str(image), str(label), _relative_id(image, base)) for image, label in pairs]


def samples_from_folders(
    image_dir: str | os.PathLike, label_dir: str | os.PathLike, label_suffix: str = "", split: str = ""
) -> list[tuple[str, str, str]]:
    """(image, label, id) pairing images and labels by relative folder and file stem (any image extension)."""
    image_dir, label_dir = paths.path(image_dir), paths.path(label_dir)
    for folder in (image_dir, label_dir):
        hint = "Set data_config.custom.image_dir / label_dir (relative to root)."
        require_dir(folder, "custom dataset", LAYOUT, hint)
    images = [p for p in paths.files_under(image_dir) if p.suffix.lower() in IMAGE_EXTENSIONS]
    require_nonempty(images, "custom dataset", split, image_dir, f"images ({', '.join(IMAGE_EXTENSIONS)})")
    labels = {}
    for label in paths.files_under(label_dir):
        if label.suffix.lower() in IMAGE_EXTENSIONS:
            labels.setdefault(label.relative_to(label_dir).with_suffix("").as_posix(), label)
    samples, missing = [], []
    for image in images:
        key = image.relative_to(image_dir).with_suffix("").as_posix()
        label = labels.get(key + label_suffix)
        if label is None:
            missing.append((str(image), str(label_dir / f"{key}{label_suffix}.png")))
        else:
            samples.append((str(image), str(label), key))
    if missing:
        raise missing_labels_error("custom dataset", missing, len(images))
    return samples


def _relative_id(image: Path, base: Path) -> str:
    try:
        return image.relative_to(base).with_suffix("").as_posix()
    except ValueError:
        return image.stem


def _split_dir(folder: Path, split: str) -> Path:
    if "{split}" in str(folder):
        return paths.path(str(folder).replace("{split}", split))
    return folder / split if (folder / split).is_dir() else folder


def default_config() -> ml_collections.ConfigDict:
    """config.data.custom."""
    config = ml_collections.ConfigDict()
    # A text file (relative to root; "{split}" is replaced by the split) of `image,label` lines ...
    config.list_file = ""
    # ... or, when list_file is empty, two folders (relative to root) matched by file stem.
    config.image_dir = "images"
    config.label_dir = "labels"
    config.label_suffix = ""  # Label stem = image stem + suffix, e.g. "_mask".
    config.update(declared_classes_config())
    return config


def info_from_config(data_config: Any) -> DatasetInfo:
    return info_from_declared_classes("custom", data_config.custom, "custom dataset")


def open_source(data_config: Any, split: str) -> FileSource:
    options = data_config.custom
    info = info_from_config(data_config)
    root = paths.path(data_config.root or ".")
    if options.list_file:
        samples = samples_from_list(root / options.list_file.replace("{split}", split), split)
    else:
        image_dir = _split_dir(root / options.image_dir, split)
        label_dir = _split_dir(root / options.label_dir, split)
        samples = samples_from_folders(image_dir, label_dir, options.label_suffix, split)
    return FileSource(samples, info, split, info.label_map, strict=data_config.strict)


KIND = DatasetKind("custom", open_source, info_from_config=info_from_config, default_config=default_config)
