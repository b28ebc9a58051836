r"""BiSeNetV1-R101 on Cityscapes (the paper's accuracy model).

    python -m bisenet_jax.main --config configs/cityscapes_bisenetv1_r101.py \
        --config.data.root=/data/cityscapes --config.train.init_backbone=resnet101-imagenet.pth \
        --workdir runs/cityscapes_v1_r101

Expected: 78.9 mIoU on the Cityscapes test set in the paper (ImageNet-initialised ResNet-101).
"""
from bisenet_jax.train.config import sibling_config


def get_config():
    config = sibling_config(__file__, "cityscapes_bisenetv1_r18")
    config.model.name = "bisenetv1_r101"
    return config
