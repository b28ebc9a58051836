"""CamVid as released with SegNet (11 classes, 480x360): split folders or the split's list file.

config.data.camvid.use_list_file  unset/None: `<root>/<split>.txt` when it exists, else the
  folders; True / False force one or the other. The list files' /SegNet/CamVid/ paths are
  re-rooted onto data.root.
"""

from __future__ import annotations

import os

import ml_collections

from bisenet_jax import paths
from bisenet_jax.data.info import IGNORE_LABEL, LabelMap, label_map_from_dict, make_dataset_info
from bisenet_jax.data.reader import (
    FileSource,
    check_pairs_exist,
    folder_kind,
    pair_files,
    read_pairs,
    require_dir,
    require_nonempty,
    sorted_files,
)
from bisenet_jax.paths import Path

CLASS_NAMES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
)  # fmt: skip
PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip
UNLABELLED = 11  # "Unlabelled" (colour (0, 0, 0)), ignored.


def label_map() -> LabelMap:
    """0..10 are the classes, 11 (Unlabelled) and 255 are ignored, 12..254 are undefined."""
    mapping = {i: i for i in range(11)} | {UNLABELLED: IGNORE_LABEL}
    return label_map_from_dict(mapping, num_classes=11)


# Mean/std measured over the 367 training images of the SegNet release (RGB, after /255).
INFO = make_dataset_info(
    "camvid", 11, CLASS_NAMES, label_map=label_map(), palette=PALETTE,
    mean=(0.4119, 0.4251, 0.4327), std=(0.3071, 0.3116, 0.3072),
)

LAYOUT = """  <root>/{train,val,test}/*.png           RGB images (480x360)
  <root>/{train,val,test}annot/*.png      label ids 0..10, 11 = Unlabelled
  <root>/{train,val,test}.txt (optional)  "image label" lines with /SegNet/CamVid/... paths"""
_SEGNET_PREFIX = "/SegNet/CamVid/"


def reroot_segnet_path(path: str, root: str | os.PathLike) -> Path:
    """Moves a path of the SegNet list files (/SegNet/CamVid/train/x.png) under `root`.

    Paths without the /SegNet/CamVid/ prefix are kept when absolute and taken relative to root otherwise.
    """
    if _SEGNET_PREFIX in path:
        return paths.path(root) / path.split(_SEGNET_PREFIX, 1)[1]
    return paths.path(path) if os.path.isabs(path) or paths.is_remote(path) else paths.path(root) / path


class CamVidSource(FileSource):
    """CamVid as released with SegNet: split folders, or the split's list file re-rooted onto `root`."""

    def __init__(
        self, root: str | os.PathLike, split: str = "train", use_list_file: bool | None = None, strict: bool = False
    ):
        root = paths.path(root)
        list_file = root / f"{split}.txt"
        if use_list_file is None:
            use_list_file = list_file.is_file()
        samples = _list_file_samples(root, split, list_file) if use_list_file else _folder_samples(root, split)
        super().__init__(samples, INFO, split, INFO.label_map, strict)


def _list_file_samples(root: Path, split: str, list_file: Path) -> list[tuple[str, str, str]]:
    if not list_file.is_file():
        raise FileNotFoundError(f"CamVid list file {list_file} does not exist. Expected layout:\n{LAYOUT}")
    pairs = [(reroot_segnet_path(a, root), reroot_segnet_path(b, root)) for a, b in read_pairs(list_file)]
    require_nonempty(pairs, "CamVid", split, list_file, "image/label lines")
    hint = f"the list's /SegNet/CamVid/ prefix is replaced by root={root}"
    check_pairs_exist(pairs, f"CamVid list file {list_file}", hint=hint)
    return [(str(image), str(label), image.stem) for image, label in pairs]


def _folder_samples(root: Path, split: str) -> list[tuple[str, str, str]]:
    image_dir, label_dir = root / split, root / f"{split}annot"
    for folder in (image_dir, label_dir):
        require_dir(folder, "CamVid", LAYOUT, "Set data_config.root to the SegNet CamVid folder.")
    images = sorted_files(image_dir, "*.png")
    require_nonempty(images, "CamVid", split, image_dir, "*.png images")
    return pair_files(images, lambda image: label_dir / image.name, "CamVid")


def default_config() -> ml_collections.ConfigDict:
    """config.data.camvid: CamVidSource's options."""
    # use_list_file unset: use <root>/<split>.txt (its /SegNet/CamVid/ paths re-rooted) when
    # present, else the split folders; True / False force one or the other.
    return ml_collections.ConfigDict({"use_list_file": ml_collections.config_dict.placeholder(bool)})


KIND = folder_kind("camvid", CamVidSource, INFO, default_config)
