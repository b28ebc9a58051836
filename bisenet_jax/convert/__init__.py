"""Conversion between bisenet_jax variables and PyTorch state_dicts (torch only where needed).

Importing this package does not import torch: the PyTorch modules live in
``bisenet_jax.convert.torch_models`` (``build_torch_model``); ``.pth`` files need torch,
``.safetensors`` files do not. Deployment formats (ONNX, TFLite, StableHLO) are in
:mod:`bisenet_jax.export`, which uses the PyTorch models for ONNX.

Each module uses only those listed before it (no import circle):

    names            Flax path <-> PyTorch key table, array layouts (numpy)
    torch_io         .pth read/write, numpy -> tensors (torch; imports nothing of bisenet_jax)
    state_dict       variables <-> state_dict, model/class detection, torchvision backbones
    files            .pth / .pt / .safetensors files -> flat numpy state_dicts
    torch_backbones  PyTorch layers, ResNet, Xception39 (torch)
    torch_models     PyTorch BiSeNetV1/V2, and models holding given weights (torch)
    commands         what ``scripts/convert.py`` runs
"""
from __future__ import annotations

from bisenet_jax.convert.files import (SAFETENSORS_SUFFIX, TORCH_SUFFIXES, load_torch_checkpoint,
                                       read_safetensors_metadata, save_torch_checkpoint)
from bisenet_jax.convert.names import key_table, variables_from_state_dict
from bisenet_jax.convert.state_dict import (from_torch_state_dict, guess_model_name, guess_resnet_depth,
                                            load_torchvision_backbone, model_template, num_classes_from_state_dict,
                                            to_torch_state_dict, unwrap_state_dict)

__all__ = [
    "SAFETENSORS_SUFFIX", "TORCH_SUFFIXES", "from_torch_state_dict", "guess_model_name", "guess_resnet_depth",
    "key_table", "load_torch_checkpoint",
    "load_torchvision_backbone", "model_template", "num_classes_from_state_dict", "read_safetensors_metadata",
    "save_torch_checkpoint", "to_torch_state_dict", "unwrap_state_dict", "variables_from_state_dict",
]
