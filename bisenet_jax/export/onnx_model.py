"""ONNX through the PyTorch copy of the network, with dynamic batch, height and width.

JAX variables -> :func:`~bisenet_jax.convert.torch_models.torch_model_from_variables` (eval mode, no
auxiliary heads) -> ``torch.onnx.export(dynamo=True)`` with ``torch.export.Dim`` for the batch and,
unless a fixed size is asked for, the height and width (>= 32 pixels; any size the JAX model takes,
not only multiples of 32: the resizes to the skip features' sizes are exported as ``Resize`` nodes
computed from the input's shape). The graph takes ``image`` (N, 3, H, W) float32, normalised RGB,
and returns ``logits`` (N, num_classes, H, W); ``metadata_props`` carry the ExportInfo.

Why the PyTorch copy rather than JAX directly: jax2tf now emits one ``XlaCallModule`` op that
tf2onnx cannot convert, and ``jax2onnx`` pins an older orbax-checkpoint than this project's; the
PyTorch modules are already held to the JAX logits (golden parity tests), and the torch.export
based exporter keeps symbolic sizes.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping

import numpy as np
import onnx
import onnx.helper
import onnx.version_converter
import torch

from bisenet_jax.convert.torch_models import torch_model_from_variables
from bisenet_jax.export.metadata import MIN_SIDE, ExportError, ExportInfo

DEFAULT_OPSET = 17  # the newest opset TensorRT 8.6 reads; 18+ works too
EXPORTER_OPSET = 18  # the opset the torch.export-based exporter emits natively
DYNAMIC_EXAMPLE_SIZE = (96, 128)  # any size works: no shortcut is taken on symbolic sizes


def export_onnx(variables: Mapping[str, Any], model_name: str, path: str | os.PathLike, info: ExportInfo, *,
                opset: int = DEFAULT_OPSET) -> pathlib.Path:
    """Write ``variables`` of ``model_name`` as a single-file ONNX model; ``info`` says which sides are
    fixed (``info.height`` / ``info.width``) and goes into ``metadata_props``."""
    if opset < 17:
        raise ExportError(f"opset {opset} is too old: the export needs opset 17 or newer")
    fixed = info.height is not None
    height, width = (info.height, info.width) if fixed else DYNAMIC_EXAMPLE_SIZE
    if min(height, width) < MIN_SIDE:
        raise ExportError(f"input size must be at least {MIN_SIDE}x{MIN_SIDE}, got {height}x{width}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = torch_model_from_variables(variables, model_name)
    # Batch 2 in the example: torch.export specialises a dimension of size 1 to a constant. For the
    # same reason the sides start at 33: at 32 the 1/32 features are 1x1, which torch.export would
    # otherwise treat as a broadcasting special case; the ONNX graph broadcasts generically and
    # takes 32 as well.
    example = torch.zeros(2, 3, height, width)
    dims = {0: torch.export.Dim("batch", min=1, max=4096)}
    if not fixed:
        dims.update({2: torch.export.Dim("height", min=MIN_SIDE + 1, max=16384),
                     3: torch.export.Dim("width", min=MIN_SIDE + 1, max=16384)})
    with torch.no_grad():
        exported = torch.export.export(model, (example,), dynamic_shapes={"x": dims})
        program = torch.onnx.export(exported, dynamo=True, input_names=["image"], output_names=["logits"],
                                    opset_version=max(opset, EXPORTER_OPSET), optimize=True, verbose=False)
    proto = program.model_proto
    if opset < EXPORTER_OPSET:
        # The exporter's own down-conversion runs before constant folding and fails on this graph;
        # the optimised graph converts cleanly with onnx's converter.
        proto = _fix_reduce_mean_attributes(onnx.version_converter.convert_version(proto, opset))
    set_metadata(proto, info)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path


def set_metadata(proto: onnx.ModelProto, info: ExportInfo) -> None:
    """Replace the model's ``metadata_props`` with ``info`` (names as strings, other values as JSON)."""
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, info.to_string_props())


def read_onnx_info(path: str | os.PathLike) -> ExportInfo:
    """The ExportInfo in an ONNX file's ``metadata_props`` (the weights are not loaded)."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf DecodeError and friends
        raise ExportError(f"{path}: cannot read it as an ONNX model ({error})") from None
    return ExportInfo.from_string_props({p.key: p.value for p in proto.metadata_props}, str(path))


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


class OnnxRunner:
    """onnxruntime on the CPU: NHWC float32 in, NHWC logits out."""

    def __init__(self, path: str | os.PathLike, threads: int = 0):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types
            raise ExportError(f"{path}: onnxruntime cannot load it ({error})") from None

    def __call__(self, images_nhwc: np.ndarray) -> np.ndarray:
        nchw = np.ascontiguousarray(np.asarray(images_nhwc, np.float32).transpose(0, 3, 1, 2))
        (logits,) = self.session.run(["logits"], {"image": nchw})
        return logits.transpose(0, 2, 3, 1)
