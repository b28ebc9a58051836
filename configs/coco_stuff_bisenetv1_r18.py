r"""BiSeNetV1-R18 on COCO-Stuff-164k (171 classes).

    python -m bisenet_jax.main --config configs/coco_stuff_bisenetv1_r18.py \
        --config.data.root=/data/cocostuff --config.train.init_backbone=resnet18-imagenet.pth \
        --workdir runs/coco_stuff_v1_r18

Expected: 31.49 mIoU (val, ss) for the widely used PyTorch implementation; about 28.1 in the
paper's COCO-Stuff table.
"""
from bisenet_jax.train.config import base_config, set_dataset


def get_config():
    config = base_config()
    config.model.name = "bisenetv1_r18"
    set_dataset(config, "coco_stuff", "")
    config.data.crop_size = (640, 640)
    config.data.scale_range = (0.75, 2.0)
    config.data.num_workers = 8
    config.train.batch_size = 16
    config.train.num_steps = 180_000
    config.optimizer.lr = 1e-2
    config.optimizer.weight_decay = 1e-4
    config.eval.batch_size = 1
    return config
