"""Default data configuration, embedded as `config.data` in every experiment config.

Every field has a typed default (or a typed placeholder), so each one can be overridden from the
command line, e.g.
  --config.data.name=camvid --config.data.root=/data/camvid --config.data.crop_size="(352,480)"
The options of one dataset kind are in `config.data.<kind>` (cityscapes, camvid, custom, tfds,
demo); their defaults live with the kind, in `bisenet_jax/data/kinds/<kind>.py`.
"""

from __future__ import annotations

import ml_collections

from bisenet_jax.data.registry import registered_kinds


def default_data_config() -> ml_collections.ConfigDict:
    """Returns the data config: dataset, augmentation and input-pipeline settings."""
    config = ml_collections.ConfigDict()

    # Dataset: a registered kind (cityscapes, camvid, coco_stuff, ade20k, custom, tfds,
    # array_record, demo: `known_datasets()`) and the folder holding it in its official layout.
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
    # Decoded training records kept in memory, up to this many GiB in each process that reads them
    # (the training process, or each worker process: each ends up holding the whole split), so each
    # image is decoded once per process, not once per epoch. 0 turns it off. Decoded, CamVid's train
    # split is 0.24 GiB; Cityscapes' 23 GiB.
    config.cache_gb = 0.0

    # Each kind's options, with the defaults its module gives.
    for kind in registered_kinds():
        if kind.default_config is not None:
            config[kind.name] = kind.default_config()
    return config
