r"""BiSeNetV1-R18 on CamVid (SegNet release, 480x360, 11 classes), full recipe for a GPU.

    python -m bisenet_jax.main --config configs/camvid_bisenetv1_r18.py \
        --config.data.root=/data/camvid --config.train.init_backbone=resnet18-imagenet.pth \
        --workdir runs/camvid_v1_r18

Expected: the paper reports 68.7 mIoU on CamVid test at 960x720 with an ImageNet backbone and a
longer schedule; on the 480x360 SegNet release expect less.
"""
from bisenet_jax.train.config import base_config, set_dataset


def get_config():
    config = base_config()
    config.model.name = "bisenetv1_r18"
    set_dataset(config, "camvid", "")
    config.data.crop_size = (352, 480)
    config.data.scale_range = (0.75, 2.0)
    config.data.color_jitter = 0.4
    config.data.num_workers = 4
    config.data.cache_gb = 1.0  # the train split is 0.24 GiB decoded: each worker decodes it once
    config.train.batch_size = 16
    config.train.num_steps = 20_000
    config.train.eval_every = 1_000
    config.train.checkpoint_every = 1_000
    config.optimizer.lr = 1e-2
    config.optimizer.warmup_steps = 500
    config.eval.batch_size = 4
    return config
