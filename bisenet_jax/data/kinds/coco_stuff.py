"""COCO-Stuff-164k with the stuffthingmaps label PNGs: 182 raw ids (11 unused) -> 171 train ids.

Splits "train" / "val" (or the folder names train2017 / val2017). No options in config.data.
"""

from __future__ import annotations

import os
from pathlib import Path

from bisenet_jax.data.info import LabelMap, label_map_from_dict, make_dataset_info
from bisenet_jax.data.reader import FileSource, folder_kind, jpg_with_png_labels

# Raw ids in the stuffthingmaps PNGs are COCO category ids minus one: 0..90 things (80 used),
# 91..181 stuff. These 11 raw ids have no category and never occur.
UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
THINGS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
STUFF = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter",
    "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit",
    "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light", "mat",
    "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement",
    "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river",
    "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper",
    "snow", "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent",
    "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete", "wall-other",
    "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops",
    "window-blind", "window-other", "wood",
)  # fmt: skip
CLASS_NAMES = THINGS + STUFF  # 80 + 91 = 171, in train-id order.


def label_map() -> LabelMap:
    """Raw 0..181 minus the 11 unused ids -> 0..170 in order; 255 ignored; the rest undefined."""
    used = [i for i in range(182) if i not in UNUSED_IDS]
    return label_map_from_dict({raw: train for train, raw in enumerate(used)}, num_classes=171)


# make_palette() colours: COCO-Stuff has no official ones.
INFO = make_dataset_info(
    "coco_stuff", 171, CLASS_NAMES, label_map=label_map(),
    mean=(0.4696, 0.4464, 0.4072), std=(0.2747, 0.2701, 0.2852),
)

LAYOUT = """  <root>/images/{train2017,val2017}/*.jpg
  <root>/stuffthingmaps_trainval2017/{train2017,val2017}/*.png   (raw ids 0..181, 255 unlabelled)"""
_SPLIT_FOLDERS = {"train": "train2017", "val": "val2017"}


class CocoStuffSource(FileSource):
    """COCO-Stuff-164k with the stuffthingmaps label PNGs; the 182 raw ids map to 171 train ids."""

    def __init__(self, root: str | os.PathLike, split: str = "train", strict: bool = False):
        root, folder = Path(root), _SPLIT_FOLDERS.get(split, split)
        image_dir, label_dir = root / "images" / folder, root / "stuffthingmaps_trainval2017" / folder
        samples = jpg_with_png_labels(image_dir, label_dir, "COCO-Stuff", split, LAYOUT)
        super().__init__(samples, INFO, split, INFO.label_map, strict)


KIND = folder_kind("coco_stuff", CocoStuffSource, INFO)
