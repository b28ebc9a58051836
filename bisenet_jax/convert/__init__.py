"""Conversion between bisenet_jax variables and PyTorch state_dicts (torch only where needed).

Importing this package does not import torch: the PyTorch modules live in
``bisenet_jax.convert.torch_models`` (``build_torch_model``) and ONNX export in
``bisenet_jax.convert.torch_onnx``; ``.pth`` files need torch, ``.safetensors`` files do not.
"""
from __future__ import annotations

from bisenet_jax.convert.files import load_torch_checkpoint, read_safetensors_metadata, save_torch_checkpoint
from bisenet_jax.convert.names import key_table, variables_from_state_dict
from bisenet_jax.convert.state_dict import (from_torch_state_dict, guess_model_name, guess_resnet_depth,
                                            load_torchvision_backbone, model_template, num_classes_from_state_dict,
                                            to_torch_state_dict, unwrap_state_dict)

__all__ = [
    "from_torch_state_dict", "guess_model_name", "guess_resnet_depth", "key_table", "load_torch_checkpoint",
    "load_torchvision_backbone", "model_template", "num_classes_from_state_dict", "read_safetensors_metadata",
    "save_torch_checkpoint", "to_torch_state_dict", "unwrap_state_dict", "variables_from_state_dict",
]
