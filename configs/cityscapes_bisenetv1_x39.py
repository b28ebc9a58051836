r"""BiSeNetV1-Xception39 on Cityscapes, trained from scratch (no ImageNet Xception39 exists).

    python -m bisenet_jax.main --config configs/cityscapes_bisenetv1_x39.py \
        --config.data.root=/data/cityscapes --workdir runs/cityscapes_v1_x39

Expected: 69.0 mIoU on val in the paper (which pre-trained the backbone; from scratch expect less).
"""
from bisenet_jax.train.config import sibling_config


def get_config():
    config = sibling_config(__file__, "cityscapes_bisenetv1_r18")
    config.model.name = "bisenetv1_x39"
    config.optimizer.lr = 2.5e-2  # the paper's V1 rate; from scratch
    config.train.num_steps = 150_000
    return config
