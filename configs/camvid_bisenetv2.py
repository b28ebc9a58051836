r"""BiSeNetV2 on CamVid (SegNet release, 480x360, 11 classes), full recipe for a GPU, from scratch.

    python -m bisenet_jax.main --config configs/camvid_bisenetv2.py \
        --config.data.root=/data/camvid --workdir runs/camvid_v2

Expected: no reference figure for this setting in ../shared/docs/REFERENCE.md (the BiSeNetV2 paper
evaluates CamVid at 960x720); from scratch on the 480x360 release see the README's CamVid section.
"""
from bisenet_jax.train.config import sibling_config


def get_config():
    config = sibling_config(__file__, "camvid_bisenetv1_r18")
    config.model.name = "bisenetv2"
    config.optimizer.lr = 5e-2
    config.optimizer.head_lr_multiplier = 1.0
    return config
