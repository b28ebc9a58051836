"""Default data configuration, embedded as `config.data` in every experiment config.

Every field has a typed default (or a typed placeholder), so each one can be overridden from the
command line, e.g.
  --config.data.name=camvid --config.data.root=/data/camvid --config.data.crop_size="(352,480)"
Reader options live in one sub-config per reader (`custom`, `tfds`, `cityscapes`, `camvid`, `demo`);
sources.py documents how each is used.
"""

from __future__ import annotations

import ml_collections

from bisenet_jax.data.datasets import IMAGENET_MEAN, IMAGENET_STD


def default_data_config() -> ml_collections.ConfigDict:
    """Returns the data config: dataset, augmentation and input-pipeline settings."""
    config = ml_collections.ConfigDict()

    # Dataset: a name known to `get_dataset_info` (demo, cityscapes, camvid, coco_stuff, ade20k,
    # custom, tfds, array_record) and the folder holding it in its official layout.
    config.name = "demo"
    config.root = ""
    config.train_split = "train"
    config.eval_split = "val"
    # Label ids outside the class range (and not the ignore label) are mapped to ignore with a
    # warning; strict=True raises instead, naming the file.
    config.strict = False

    # Training augmentation, in this order, with one RNG per example (see transforms.py).
    config.crop_size = (128, 128)  # (height, width) of the training crops.
    config.scale_range = (0.75, 2.0)  # Uniform random scale in [low, high] ...
    config.scales = ()  # ... unless non-empty: then one of these, e.g. (0.75, 1.0, 1.5, 1.75, 2.0).
    config.hflip = True
    # Brightness, contrast and saturation factors drawn from [1 - j, 1 + j]; 0 disables jitter.
    config.color_jitter = 0.4

    # Input pipeline (grain). num_workers=0 runs the transforms in the training process with
    # `num_threads` threads; > 0 starts that many worker processes (each with `num_threads` threads).
    config.shuffle = True
    config.num_workers = 0
    config.num_threads = 2
    config.worker_buffer_size = 2  # Finished batches each worker process keeps ready.
    config.prefetch_buffer_size = 2  # Batches computed ahead in-process (num_workers=0).

    # Reader options (read by bisenet_jax/data/sources.py).
    config.custom = ml_collections.ConfigDict()
    # A text file (relative to root; "{split}" is replaced by the split) of `image,label` lines ...
    config.custom.list_file = ""
    # ... or, when list_file is empty, two folders (relative to root) matched by file stem.
    config.custom.image_dir = "images"
    config.custom.label_dir = "labels"
    config.custom.label_suffix = ""  # Label stem = image stem + suffix, e.g. "_mask".
    config.custom.num_classes = 0  # Must be set for a custom dataset.
    config.custom.ignore_label = 255
    # Raw id -> train id as "src:dst" pairs, e.g. "0:255,1:0,2:1" (ids not listed are invalid);
    # empty: the label files already hold train ids.
    config.custom.label_map = ""
    config.custom.class_names = ""  # Optional comma-separated names, one per class.
    config.custom.mean = IMAGENET_MEAN  # RGB statistics after /255 used for normalisation.
    config.custom.std = IMAGENET_STD

    config.tfds = ml_collections.ConfigDict()
    config.tfds.name = ""  # e.g. "my_dataset:1.0.0"
    config.tfds.image_key = "image"
    config.tfds.label_key = "segmentation_mask"
    config.tfds.data_dir = ""  # Empty = the TFDS default (~/tensorflow_datasets).
    config.tfds.id_key = ""  # Optional feature used as the record id.
    config.tfds.num_classes = 0  # Must be set for a TFDS dataset.
    config.tfds.ignore_label = 255
    config.tfds.label_map = ""
    config.tfds.class_names = ""
    config.tfds.mean = IMAGENET_MEAN
    config.tfds.std = IMAGENET_STD

    config.cityscapes = ml_collections.ConfigDict()
    # Read the ready `*_gtFine_labelTrainIds.png` files instead of mapping `*_labelIds.png`.
    config.cityscapes.use_train_id_files = False

    config.camvid = ml_collections.ConfigDict()
    # Unset: use <root>/<split>.txt (its /SegNet/CamVid/ paths re-rooted) when present, else the
    # split folders; True / False force one or the other.
    config.camvid.use_list_file = ml_collections.config_dict.placeholder(bool)

    # The embedded procedural dataset (no download), see demo.py.
    config.demo = ml_collections.ConfigDict()
    config.demo.seed = 0
    config.demo.num_train = 2000
    config.demo.num_val = 200
    config.demo.image_size = (120, 160)  # (height, width); 120 is deliberately not a multiple of 32.
    return config
