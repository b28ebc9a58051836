"""ADE20K SceneParsing (ADEChallengeData2016): 0 ("other") -> ignore, 1..150 -> train ids 0..149.

Splits "train" / "val" (or the folder names training / validation); data.root may be
ADEChallengeData2016 or the folder holding it. No options in config.data.
"""

from __future__ import annotations

import os
from pathlib import Path

from bisenet_jax.data.info import IGNORE_LABEL, LabelMap, label_map_from_dict, make_dataset_info
from bisenet_jax.data.reader import FileSource, folder_kind, jpg_with_png_labels

CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
    "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step",
    "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)  # fmt: skip


def label_map() -> LabelMap:
    """0 ("other") and 255 ignored, 1..150 -> 0..149, 151..254 undefined."""
    return label_map_from_dict({0: IGNORE_LABEL} | {i: i - 1 for i in range(1, 151)}, num_classes=150)


# make_palette() colours: ADE20K has no official ones.
INFO = make_dataset_info(
    "ade20k", 150, CLASS_NAMES, label_map=label_map(),
    mean=(0.4934, 0.4682, 0.4311), std=(0.2568, 0.2551, 0.2742),
)

LAYOUT = """  <root>/images/{training,validation}/*.jpg
  <root>/annotations/{training,validation}/*.png   (0 = other, 1..150 classes)
  where <root> is ADEChallengeData2016 (or the folder containing it)"""
_SPLIT_FOLDERS = {"train": "training", "val": "validation"}


class ADE20KSource(FileSource):
    """ADE20K SceneParsing (ADEChallengeData2016): 0 -> ignore, 1..150 -> 0..149."""

    def __init__(self, root: str | os.PathLike, split: str = "train", strict: bool = False):
        root, folder = Path(root), _SPLIT_FOLDERS.get(split, split)
        if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
            root = root / "ADEChallengeData2016"
        image_dir, label_dir = root / "images" / folder, root / "annotations" / folder
        samples = jpg_with_png_labels(image_dir, label_dir, "ADE20K", split, LAYOUT)
        super().__init__(samples, INFO, split, INFO.label_map, strict)


KIND = folder_kind("ade20k", ADE20KSource, INFO)
