r"""BiSeNetV2 on CamVid (SegNet release, 480x360, 11 classes), full recipe for a GPU, from scratch.

    python -m bisenet_jax.main --config configs/camvid_bisenetv2.py \
        --config.data.root=/data/camvid --workdir runs/camvid_v2

Expected: the BiSeNetV2 paper reports 72.4 mIoU on CamVid test at 960x720 with Cityscapes
pre-training; from scratch on the 480x360 release expect less.
"""
from bisenet_jax.train.config import sibling_config


def get_config():
    config = sibling_config(__file__, "camvid_bisenetv1_r18")
    config.model.name = "bisenetv2"
    config.optimizer.lr = 5e-2
    config.optimizer.head_lr_multiplier = 1.0
    return config
