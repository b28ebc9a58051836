r"""BiSeNetV2 on CamVid (SegNet release, 480x360, 11 classes), full recipe for a GPU, from scratch.

    python -m bisenet_jax.main --config configs/camvid_bisenetv2.py \
        --config.data.root=/data/camvid --workdir runs/camvid_v2

Expected: no published figure for this setting (the BiSeNetV2 paper evaluates CamVid at 960x720);
its 30-minute CPU variant, camvid_bisenetv2_cpu.py, reaches about 30% val mIoU at 480x360.
"""
from bisenet_jax.train.config import sibling_config


def get_config():
    config = sibling_config(__file__, "camvid_bisenetv1_r18")
    config.model.name = "bisenetv2"
    config.optimizer.lr = 5e-2
    config.optimizer.head_lr_multiplier = 1.0
    return config
