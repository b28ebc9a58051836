"""ONNX export of JAX BiSeNet variables through the shipped PyTorch module (torch imported here).

JAX variables -> :func:`~bisenet_jax.convert.to_torch_state_dict` (without the auxiliary heads) ->
:func:`~bisenet_jax.convert.torch_models.torch_model_from_variables` in eval mode -> ``torch.onnx.export``
(the torch.export-based exporter, which needs ``onnxscript``). The graph takes ``image`` (N, 3, H, W)
float32, normalised RGB, and returns ``logits`` (N, num_classes, H, W); the batch axis is dynamic,
H and W are fixed at export time (the resize sizes are baked in, as TensorRT engines want).
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import onnx.helper
import onnx.version_converter
import torch

from bisenet_jax.convert.torch_models import torch_model_from_variables

DEFAULT_OPSET = 17  # the newest opset TensorRT 8.6 reads; 18+ works too
EXPORTER_OPSET = 18  # the opset the torch.export-based exporter emits natively


def export_onnx(variables: Mapping[str, Any], model_name: str, path: str | os.PathLike, *,
                input_size: Sequence[int] = (512, 1024), opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True, metadata: Mapping[str, str] | None = None) -> pathlib.Path:
    """Write ``variables`` of ``model_name`` as a single-file ONNX model for (N, 3, H, W) inputs.

    ``metadata`` (strings) goes into the model's ``metadata_props`` (e.g. mean/std, class names).
    """
    if opset < 17:
        raise ValueError(f"opset {opset} is too old: the export needs opset 17 or newer")
    height, width = (int(s) for s in input_size)
    if min(height, width) < 32:
        raise ValueError(f"input_size must be at least 32x32, got {height}x{width}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = torch_model_from_variables(variables, model_name)
    # Batch 2 in the example: torch.export specialises a dimension of size 1 to a constant.
    example = torch.zeros(2 if dynamic_batch else 1, 3, height, width)
    dynamic_shapes = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
    with torch.no_grad():
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=["image"], output_names=["logits"],
                                    opset_version=max(opset, EXPORTER_OPSET), dynamic_shapes=dynamic_shapes,
                                    optimize=True, verbose=False)
    proto = program.model_proto
    if opset < EXPORTER_OPSET:
        # The exporter's own down-conversion runs before constant folding and fails on this graph;
        # the optimised graph converts cleanly with onnx's converter.
        proto = _fix_reduce_mean_attributes(onnx.version_converter.convert_version(proto, opset))
    if metadata:
        onnx.helper.set_model_props(proto, {str(k): str(v) for k, v in metadata.items()})
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path


def _fix_reduce_mean_attributes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop ``noop_with_empty_axes=0`` that onnx's 18 -> 17 converter leaves on ReduceMean.

    The attribute only exists from opset 18 on; 0 is its default and the axes are explicit after
    the conversion, so dropping it changes nothing but makes the model valid at opset 13-17.
    """
    for node in proto.graph.node:
        if node.op_type == "ReduceMean":
            keep = [a for a in node.attribute if not (a.name == "noop_with_empty_axes" and a.i == 0)]
            del node.attribute[:]
            node.attribute.extend(keep)
    return proto


def onnx_logits(path: str | os.PathLike, images_nhwc: np.ndarray) -> np.ndarray:
    """Run an exported model with onnxruntime on an NHWC batch; returns NHWC logits."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(["logits"], {"image": np.ascontiguousarray(np.asarray(images_nhwc, np.float32).transpose(0, 3, 1, 2))})
    return output.transpose(0, 2, 3, 1)
