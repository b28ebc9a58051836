"""Cityscapes (fine annotations): labelIds mapped to the 19 trainIds, or ready labelTrainIds files.

config.data.cityscapes.use_train_id_files  False: map `*_gtFine_labelIds.png` (falls back to ready
  `*_gtFine_labelTrainIds.png` when a split has no labelIds files); True: read labelTrainIds.
Facts follow the official cityscapesscripts `labels.py` (ids, colours); mean/std are measured.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import ml_collections

from bisenet_jax.data.info import IGNORE_LABEL, LabelMap, label_map_from_dict, make_dataset_info
from bisenet_jax.data.reader import FileSource, folder_kind, pair_files, require_dir, require_nonempty, sorted_files

CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip
# labelId -> trainId for the 19 evaluated classes; the other 15 labelIds (0..33) are ignored.
LABEL_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
NUM_LABEL_IDS = 34  # labelIds 0..33 exist ("license plate", -1, is not stored in PNGs).


def label_map() -> LabelMap:
    """labelIds (0..33) -> trainIds; labelIds 34..254 are undefined, 255 stays ignore."""
    mapping = {i: LABEL_TO_TRAIN_ID.get(i, IGNORE_LABEL) for i in range(NUM_LABEL_IDS)}
    return label_map_from_dict(mapping, num_classes=19)


INFO = make_dataset_info(
    "cityscapes", 19, CLASS_NAMES, label_map=label_map(), palette=PALETTE,
    mean=(0.3257, 0.3690, 0.3223), std=(0.2112, 0.2148, 0.2115),
)

LAYOUT = """  <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
      (or _gtFine_labelTrainIds.png made by cityscapesscripts' createTrainIdLabelImgs)
  with <split> one of train, val, test"""


class CityscapesSource(FileSource):
    """Cityscapes fine annotations: labelIds mapped to the 19 trainIds, or ready labelTrainIds files."""

    def __init__(
        self, root: str | os.PathLike, split: str = "train", use_train_id_files: bool = False, strict: bool = False
    ):
        root = Path(root)
        image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        for folder in (image_dir, label_dir):
            hint = "Set data_config.root to the folder holding leftImg8bit/ and gtFine/."
            require_dir(folder, "Cityscapes", LAYOUT, hint)
        images = sorted_files(image_dir, "*/*_leftImg8bit.png")
        require_nonempty(images, "Cityscapes", split, image_dir, "<city>/*_leftImg8bit.png files")

        def label_for(kind: str) -> Callable[[Path], Path]:
            suffix = f"_gtFine_{kind}.png"
            return lambda image: label_dir / image.parent.name / image.name.replace("_leftImg8bit.png", suffix)

        def stem(image: Path) -> str:
            return image.name[: -len("_leftImg8bit.png")]

        has_label_ids = any(label_dir.glob("*/*_gtFine_labelIds.png"))
        has_train_ids = any(label_dir.glob("*/*_gtFine_labelTrainIds.png"))
        use_train_ids = use_train_id_files or (has_train_ids and not has_label_ids)
        try:
            kind = "labelTrainIds" if use_train_ids else "labelIds"
            samples = pair_files(images, label_for(kind), "Cityscapes", stem)
        except FileNotFoundError as error:
            if not use_train_id_files:
                raise
            raise FileNotFoundError(
                f"{error}\nCreate the labelTrainIds files with cityscapesscripts' "
                "createTrainIdLabelImgs.py, or set data_config.cityscapes.use_train_id_files=False "
                "to map the *_gtFine_labelIds.png files."
            ) from None
        super().__init__(samples, INFO, split, INFO.train_id_map if use_train_ids else INFO.label_map, strict)


def default_config() -> ml_collections.ConfigDict:
    """config.data.cityscapes: CityscapesSource's options."""
    # use_train_id_files: read the ready `*_gtFine_labelTrainIds.png` files instead of mapping
    # `*_labelIds.png`.
    return ml_collections.ConfigDict({"use_train_id_files": False})


KIND = folder_kind("cityscapes", CityscapesSource, INFO, default_config)
