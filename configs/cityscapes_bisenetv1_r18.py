r"""BiSeNetV1-R18 on Cityscapes, the widely used PyTorch recipe.

    python -m bisenet_jax.main --config configs/cityscapes_bisenetv1_r18.py \
        --config.data.root=/data/cityscapes --config.train.init_backbone=resnet18-imagenet.pth \
        --workdir runs/cityscapes_v1_r18

Expected: 74.8 mIoU on val in the paper (75.44 ss / 77.45 msf for the widely used PyTorch
implementation, ImageNet-initialised ResNet-18, 8 GPUs x 2 images).
"""
from bisenet_jax.train.config import base_config, set_dataset


def get_config():
    config = base_config()
    config.model.name = "bisenetv1_r18"
    set_dataset(config, "cityscapes", "")
    config.data.crop_size = (1024, 1024)
    config.data.scale_range = (0.75, 2.0)
    config.data.color_jitter = 0.4
    config.data.num_workers = 8
    config.train.batch_size = 16
    config.train.num_steps = 80_000
    config.optimizer.lr = 1e-2
    config.optimizer.weight_decay = 5e-4
    config.optimizer.warmup_steps = 1_000
    config.optimizer.head_lr_multiplier = 10.0
    config.model.dtype = "bfloat16"  # the PyTorch recipe trains in fp16 mixed precision
    config.eval.batch_size = 1
    return config
