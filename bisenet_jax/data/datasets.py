"""Dataset constants: classes, colours, mean/std and label maps, in one place.

Every dataset is described by a `DatasetInfo`. Label files on disk hold *raw* ids (Cityscapes
labelIds, COCO-Stuff's 182 ids, ADE20K's 0..150, ...); a `LabelMap` turns them into *train* ids
0..num_classes-1 plus the ignore label, with a 256-entry uint8 lookup table applied by numpy
indexing. Raw values the dataset does not define are flagged by `LabelMap.valid` so readers can
count them (or fail in strict mode) instead of silently training on them.

Facts (ids, colours, mean/std) follow `../shared/docs/REFERENCE.md` section 6.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

IGNORE_LABEL = 255

# ImageNet statistics (after /255, RGB): the fallback for datasets without their own.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# Label maps


@dataclasses.dataclass(frozen=True, eq=False)
class LabelMap:
    """Raw label id -> train id, as 256-entry tables.

    lut:   (256,) uint8, lut[raw] is the train id (or the ignore label).
    valid: (256,) bool, False for raw values the dataset does not define (they map to ignore,
           but a reader reports them: they usually mean broken or unconverted labels).
    """

    lut: np.ndarray
    valid: np.ndarray

    def __post_init__(self):
        lut = np.asarray(self.lut)
        valid = np.asarray(self.valid)
        if lut.shape != (256,) or lut.dtype != np.uint8:
            raise ValueError(f"LabelMap.lut must be a (256,) uint8 array, got {lut.shape} {lut.dtype}")
        if valid.shape != (256,) or valid.dtype != bool:
            raise ValueError(f"LabelMap.valid must be a (256,) bool array, got {valid.shape} {valid.dtype}")
        object.__setattr__(self, "lut", lut)
        object.__setattr__(self, "valid", valid)
        # uint16 table with 256 for undefined raw values: one np.take plus a max() finds them
        # (about 0.7 ms more than the uint8 table for a 2048x1024 label, where a separate validity
        # pass would cost another 4 ms).
        lut16 = lut.astype(np.uint16)
        lut16[~valid] = 256
        object.__setattr__(self, "_lut16", lut16)

    def apply(self, raw: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
        """Maps a uint8 raw label image; returns (train ids uint8, {undefined raw id: pixel count})."""
        mapped = np.take(self._lut16, raw)
        if mapped.max(initial=0) <= 255:
            return mapped.astype(np.uint8), {}
        counts = np.bincount(raw.reshape(-1), minlength=256)
        invalid = {int(i): int(counts[i]) for i in np.flatnonzero((counts > 0) & ~self.valid)}
        return np.take(self.lut, raw), invalid  # lut sends undefined ids to the ignore label.


def identity_label_map(num_classes: int, ignore_label: int = IGNORE_LABEL) -> LabelMap:
    """Labels already in train ids: 0..num_classes-1 and ignore_label are defined, the rest is not."""
    _check_ignore(num_classes, ignore_label)
    lut = np.full(256, ignore_label, np.uint8)
    lut[:num_classes] = np.arange(num_classes)
    valid = np.zeros(256, bool)
    valid[:num_classes] = True
    valid[ignore_label] = True
    return LabelMap(lut, valid)


def label_map_from_dict(
    mapping: Mapping[int, int], num_classes: int, ignore_label: int = IGNORE_LABEL
) -> LabelMap:
    """A LabelMap from {raw id: train id}. Raw ids not in `mapping` (except ignore_label) are undefined.

    Train ids must be in 0..num_classes-1 or equal ignore_label (map a raw id to ignore_label to
    ignore it on purpose, e.g. {0: 255, 1: 0, 2: 1} for masks whose 0 means "unlabelled").
    """
    _check_ignore(num_classes, ignore_label)
    lut = np.full(256, ignore_label, np.uint8)
    valid = np.zeros(256, bool)
    valid[ignore_label] = True
    for raw, train in mapping.items():
        raw, train = int(raw), int(train)
        if not 0 <= raw <= 255:
            raise ValueError(f"label_map key {raw} is not a uint8 label value (0..255)")
        if not (0 <= train < num_classes or train == ignore_label):
            raise ValueError(
                f"label_map maps raw id {raw} to {train}, which is neither a class id "
                f"(0..{num_classes - 1}) nor the ignore label {ignore_label}"
            )
        lut[raw] = train
        valid[raw] = True
    return LabelMap(lut, valid)


def _check_ignore(num_classes: int, ignore_label: int) -> None:
    if not 1 <= num_classes <= 255:
        raise ValueError(f"num_classes must be in 1..255 for uint8 labels, got {num_classes}")
    if not num_classes <= ignore_label <= 255:
        raise ValueError(
            f"ignore_label {ignore_label} must be in {num_classes}..255: values below num_classes "
            f"({num_classes}) are class ids, and labels are stored as uint8"
        )


# --------------------------------------------------------------------------------------------
# Palettes


def make_palette(num_classes: int) -> np.ndarray:
    """A deterministic palette of distinct colours for any number of classes: (num_classes, 3) uint8.

    The bit-interleaving scheme of the PASCAL VOC palette, started at VOC index 1 so that no class
    is black (black is left for the ignore label in visualisations): class c gets colour index
    k = c + 1, and bit 3*j (3*j + 1, 3*j + 2) of k becomes bit 7 - j of red (green, blue). Different
    classes always get different colours (the map is a bijection on 24-bit indices), and the first
    classes get the most saturated ones: (128,0,0), (0,128,0), (128,128,0), (0,0,128), ...
    """
    if num_classes < 0 or num_classes >= 2**24:
        raise ValueError(f"num_classes must be in 0..2**24-1, got {num_classes}")
    index = np.arange(1, num_classes + 1, dtype=np.int64)
    palette = np.zeros((num_classes, 3), np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# DatasetInfo and the registry


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetInfo:
    """What the model, trainer and evaluator need to know about a dataset.

    palette: (num_classes, 3) uint8 RGB colour per train id.
    mean, std: per-channel RGB statistics after dividing pixels by 255.
    ignore_label: train-id value that losses and metrics skip.
    label_map: raw id -> train id map for the dataset's label files (None: files hold train ids).
    """

    name: str
    class_names: tuple[str, ...]
    num_classes: int
    palette: np.ndarray
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    ignore_label: int = IGNORE_LABEL
    label_map: LabelMap | None = None

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        palette = np.asarray(self.palette, np.uint8)
        object.__setattr__(self, "palette", palette)
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"dataset {self.name!r}: {len(self.class_names)} class names for num_classes={self.num_classes}"
            )
        if palette.shape != (self.num_classes, 3):
            raise ValueError(
                f"dataset {self.name!r}: palette shape {palette.shape}, expected ({self.num_classes}, 3)"
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"dataset {self.name!r}: mean and std need 3 (RGB) values each")
        _check_ignore(self.num_classes, self.ignore_label)

    @property
    def train_id_map(self) -> LabelMap:
        """The LabelMap for label files that already hold train ids."""
        return identity_label_map(self.num_classes, self.ignore_label)


_REGISTRY: dict[str, DatasetInfo] = {}
# Infos registered by other modules when they are imported (imported on first request).
_LAZY_MODULES = {"demo": "bisenet_jax.data.demo"}
# Names whose classes come from the data config, not from a fixed table.
_CONFIG_DEFINED = ("custom", "tfds", "array_record")


def register_dataset_info(info: DatasetInfo, overwrite: bool = False) -> DatasetInfo:
    """Makes `info` available as get_dataset_info(info.name). Returns it."""
    if info.name in _REGISTRY and not overwrite and _REGISTRY[info.name] is not info:
        raise ValueError(f"dataset info {info.name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[info.name] = info
    return info


def known_datasets() -> list[str]:
    """Names get_dataset_info accepts (fixed tables plus the config-defined kinds)."""
    return sorted(set(_REGISTRY) | set(_LAZY_MODULES) | set(_CONFIG_DEFINED))


def get_dataset_info(name_or_config: str | Any) -> DatasetInfo:
    """The DatasetInfo for a dataset name, or for a data config (needed for custom, tfds, array_record).

    With a config, `config.name` selects the dataset; for "custom" and "tfds" the classes come from
    the config's sub-fields (see `sources.py`), for "array_record" from the shards' dataset_info.json.
    """
    if isinstance(name_or_config, str):
        name, config = name_or_config, None
    else:
        name, config = getattr(name_or_config, "name", None), name_or_config
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _LAZY_MODULES:
        importlib.import_module(_LAZY_MODULES[name])
        if name in _REGISTRY:
            return _REGISTRY[name]
        raise KeyError(f"module {_LAZY_MODULES[name]} did not register dataset info {name!r}")
    if name in _CONFIG_DEFINED:
        if config is None:
            raise KeyError(
                f"dataset {name!r} takes its classes from the data config: call "
                f"get_dataset_info(data_config) instead of get_dataset_info({name!r})"
            )
        from bisenet_jax.data import sources  # Local import: sources imports this module.

        return sources.dataset_info_from_config(config)
    raise KeyError(f"unknown dataset {name!r}; known datasets: {', '.join(known_datasets())}")


def make_dataset_info(
    name: str,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    ignore_label: int = IGNORE_LABEL,
    label_map: Mapping[int, int] | LabelMap | None = None,
    palette: Any = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> DatasetInfo:
    """A DatasetInfo for a custom dataset, with generic class names and make_palette() colours by default."""
    if class_names is None or len(class_names) == 0:
        class_names = [f"class_{i}" for i in range(num_classes)]
    if isinstance(label_map, Mapping):
        label_map = label_map_from_dict(label_map, num_classes, ignore_label)
    return DatasetInfo(
        name=name,
        class_names=tuple(class_names),
        num_classes=num_classes,
        palette=make_palette(num_classes) if palette is None else palette,
        mean=tuple(mean),
        std=tuple(std),
        ignore_label=ignore_label,
        label_map=label_map,
    )


# --------------------------------------------------------------------------------------------
# Cityscapes

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip
# labelId -> trainId for the 19 evaluated classes; the other 15 labelIds (0..33) are ignored.
CITYSCAPES_LABEL_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CITYSCAPES_NUM_LABEL_IDS = 34  # labelIds 0..33 exist ("license plate", -1, is not stored in PNGs).


def cityscapes_label_map() -> LabelMap:
    """labelIds (0..33) -> trainIds; labelIds 34..254 are undefined, 255 stays ignore."""
    mapping = {i: CITYSCAPES_LABEL_TO_TRAIN_ID.get(i, IGNORE_LABEL) for i in range(CITYSCAPES_NUM_LABEL_IDS)}
    return label_map_from_dict(mapping, num_classes=19)


CITYSCAPES = register_dataset_info(
    DatasetInfo(
        name="cityscapes",
        class_names=CITYSCAPES_CLASSES,
        num_classes=19,
        palette=np.array(CITYSCAPES_PALETTE, np.uint8),
        mean=(0.3257, 0.3690, 0.3223),
        std=(0.2112, 0.2148, 0.2115),
        label_map=cityscapes_label_map(),
    )
)


# --------------------------------------------------------------------------------------------
# CamVid (SegNet release)

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
)  # fmt: skip
CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip
CAMVID_UNLABELLED = 11  # "Unlabelled" (colour (0, 0, 0)), ignored.


def camvid_label_map() -> LabelMap:
    """0..10 are the classes, 11 (Unlabelled) and 255 are ignored, 12..254 are undefined."""
    mapping = {i: i for i in range(11)} | {CAMVID_UNLABELLED: IGNORE_LABEL}
    return label_map_from_dict(mapping, num_classes=11)


CAMVID = register_dataset_info(
    DatasetInfo(
        name="camvid",
        class_names=CAMVID_CLASSES,
        num_classes=11,
        palette=np.array(CAMVID_PALETTE, np.uint8),
        # Measured over the 367 training images of the SegNet release (RGB, after /255).
        mean=(0.4119, 0.4251, 0.4327),
        std=(0.3071, 0.3116, 0.3072),
        label_map=camvid_label_map(),
    )
)


# --------------------------------------------------------------------------------------------
# COCO-Stuff-164k

# Raw ids in the stuffthingmaps PNGs are COCO category ids minus one: 0..90 things (80 used),
# 91..181 stuff. These 11 raw ids have no category and never occur.
COCO_STUFF_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
COCO_STUFF_THINGS = (
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
COCO_STUFF_STUFF = (
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
COCO_STUFF_CLASSES = COCO_STUFF_THINGS + COCO_STUFF_STUFF  # 80 + 91 = 171, in train-id order.


def coco_stuff_label_map() -> LabelMap:
    """Raw 0..181 minus the 11 unused ids -> 0..170 in order; 255 ignored; the rest undefined."""
    used = [i for i in range(182) if i not in COCO_STUFF_UNUSED_IDS]
    return label_map_from_dict({raw: train for train, raw in enumerate(used)}, num_classes=171)


COCO_STUFF = register_dataset_info(
    DatasetInfo(
        name="coco_stuff",
        class_names=COCO_STUFF_CLASSES,
        num_classes=171,
        palette=make_palette(171),
        mean=(0.4696, 0.4464, 0.4072),
        std=(0.2747, 0.2701, 0.2852),
        label_map=coco_stuff_label_map(),
    )
)


# --------------------------------------------------------------------------------------------
# ADE20K (SceneParsing, ADEChallengeData2016)

ADE20K_CLASSES = (
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


def ade20k_label_map() -> LabelMap:
    """0 ("other") and 255 ignored, 1..150 -> 0..149, 151..254 undefined."""
    return label_map_from_dict({0: IGNORE_LABEL} | {i: i - 1 for i in range(1, 151)}, num_classes=150)


ADE20K = register_dataset_info(
    DatasetInfo(
        name="ade20k",
        class_names=ADE20K_CLASSES,
        num_classes=150,
        palette=make_palette(150),
        mean=(0.4934, 0.4682, 0.4311),
        std=(0.2568, 0.2551, 0.2742),
        label_map=ade20k_label_map(),
    )
)
