"""The base experiment config; every file in ``configs/`` starts from :func:`base_config`.

Derived fields are ``FieldReference``s, so they follow command-line overrides: the optimizer's
``total_steps`` is ``train.num_steps``, and ``model.num_classes`` follows the dataset's class
count set by :func:`set_dataset`.
"""
from __future__ import annotations

import ml_collections

from bisenet_jax.data import dataset_kind, default_data_config


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.name = "bisenetv1_r18"
    config.model.num_classes = 19
    config.model.dtype = "float32"  # "bfloat16": bf16 compute, float32 parameters/BN statistics/logits.
    config.model.aux_heads = True
    config.model.kernels = "auto"  # "auto" (CPU forms on a CPU backend, XLA's ops elsewhere), "cpu" or "xla".

    config.data = default_data_config()
    config.eval = _default_eval_config()

    config.train = ml_collections.ConfigDict()
    config.train.seed = 0
    config.train.batch_size = 16  # Global batch, split over every device of every process.
    num_steps = ml_collections.FieldReference(80_000)
    config.train.num_steps = num_steps
    # Stop at this wall-clock budget (minutes, 0 = none). With optimizer.schedule_clock="steps" the LR
    # schedule still spans num_steps, so set num_steps to what the budget reaches (see the CPU-budget
    # CamVid configs); with "time" the schedule spans the budget and num_steps is only a cap.
    config.train.time_budget_minutes = 0.0
    config.train.log_every = 50
    config.train.eval_every = 5_000  # 0 = only at the end; < 0 = never.
    config.train.checkpoint_every = 2_000
    config.train.keep_checkpoints = 3  # The last N; the best by val mIoU is kept as well.
    config.train.async_checkpointing = True
    # On resume, a damaged or incomplete newest step is reported and the next older step is used;
    # True refuses to start instead, naming the step.
    config.train.strict_resume = False
    config.train.num_prediction_images = 4  # Coloured predictions written to TensorBoard/PNG per eval.
    config.train.progress_bar = True
    # Initialisation: a torchvision ImageNet ResNet .pth/.safetensors for the V1 backbone, and/or a
    # full bisenet_jax checkpoint (model dir or training workdir) or a PyTorch BiSeNet .pth.
    config.train.init_backbone = ""
    config.train.init_checkpoint = ""

    config.loss = ml_collections.ConfigDict()
    config.loss.name = "ohem"  # or "ce"
    config.loss.ohem_thresh = 0.7
    config.loss.aux_weight = 1.0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"  # or "adamw"
    config.optimizer.lr = 1e-2
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.b1 = 0.9  # AdamW only.
    config.optimizer.b2 = 0.999
    config.optimizer.weight_decay = 5e-4  # Conv kernels only.
    config.optimizer.warmup_steps = 1_000
    config.optimizer.warmup_start_factor = 0.1
    config.optimizer.warmup = "exp"  # or "linear"
    config.optimizer.poly_power = 0.9
    config.optimizer.total_steps = num_steps
    # "steps": the rate of step t is schedule(t). "time": schedule(total_steps * elapsed / budget) over
    # train.time_budget_minutes (which it needs), so warmup and decay end with the budget; the budget
    # and the schedule's position then carry across resumes (bisenet_jax/train/optim.py).
    config.optimizer.schedule_clock = "steps"
    config.optimizer.head_lr_multiplier = 10.0
    config.optimizer.head_modules = ("ffm", "conv_out", "conv_out16", "conv_out32")
    config.optimizer.grad_clip_norm = 0.0  # 0 = no clipping.

    config.mesh = ml_collections.ConfigDict()
    config.mesh.num_devices = 0  # 0 = every device of every process; the batch is sharded over them.
    return config


def set_dataset(config: ml_collections.ConfigDict, name: str, root: str = "") -> None:
    """Point ``config.data`` at a dataset and take its class count."""
    config.data.name = name
    config.data.root = root
    info = dataset_kind(name).info  # None for kinds whose classes the data config declares (custom, ...).
    if info is not None:
        config.model.num_classes = info.num_classes


def _default_eval_config() -> ml_collections.ConfigDict:
    from bisenet_jax.evaluation.evaluator import default_eval_config
    return default_eval_config()


def config_from_file(path) -> ml_collections.ConfigDict:
    """``get_config()`` of a config file, e.g. ``config_from_file("configs/demo.py")``."""
    import importlib.util
    import pathlib

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"bisenet_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def sibling_config(this_file: str, name: str) -> ml_collections.ConfigDict:
    """The config of ``<name>.py`` next to ``this_file``: how variant configs start from a base one."""
    import pathlib

    return config_from_file(pathlib.Path(this_file).with_name(f"{name}.py"))
