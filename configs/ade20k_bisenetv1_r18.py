r"""BiSeNetV1-R18 on ADE20K (ADEChallengeData2016, 150 classes).

    python -m bisenet_jax.main --config configs/ade20k_bisenetv1_r18.py \
        --config.data.root=/data/ADEChallengeData2016 --config.train.init_backbone=resnet18-imagenet.pth \
        --workdir runs/ade20k_v1_r18

Expected: 36.15 mIoU (val, ss) for the widely used PyTorch implementation.
"""
from bisenet_jax.train.config import base_config, set_dataset


def get_config():
    config = base_config()
    config.model.name = "bisenetv1_r18"
    set_dataset(config, "ade20k", "")
    config.data.crop_size = (640, 640)
    config.data.scale_range = (0.5, 2.0)
    config.data.num_workers = 8
    config.train.batch_size = 16
    config.train.num_steps = 200_000
    config.optimizer.lr = 1e-2
    config.optimizer.weight_decay = 1e-4
    config.eval.batch_size = 1
    return config
