r"""BiSeNetV1-Xception39 on CamVid (SegNet release), full recipe for a GPU, from scratch.

    python -m bisenet_jax.main --config configs/camvid_bisenetv1_x39.py \
        --config.data.root=/data/camvid --workdir runs/camvid_v1_x39

Expected: the paper reports 65.6 mIoU on CamVid test at 960x720 (pre-trained backbone).
"""
from bisenet_jax.train.config import sibling_config


def get_config():
    config = sibling_config(__file__, "camvid_bisenetv1_r18")
    config.model.name = "bisenetv1_x39"
    config.optimizer.lr = 2.5e-2
    return config
