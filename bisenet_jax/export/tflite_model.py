"""TFLite / LiteRT: jax2tf (native serialization) -> TFLite converter -> a ``.tflite`` flatbuffer.

jax2tf wraps the network's StableHLO in one ``XlaCallModule`` op; the TFLite converter legalises
that module to TFLite builtin ops (no Flex ops, no TensorFlow at run time). The file takes NHWC
float32 normalised RGB and returns NHWC logits; the ExportInfo is a metadata buffer named
``bisenet_jax`` (JSON). It runs with the LiteRT interpreter (``ai_edge_litert``).

Sizes: a fixed size (batch 1) may be any size of at least 32 pixels a side. A dynamic size has a
dynamic batch, height and width, but only multiples of 32: at other sizes the network resizes
features to their skip features' sizes with a gather whose shape depends on the input, and the
converter has no dynamic gather ("'vhlo.dynamic_gather_v1' op is not part of the vhlo support
yet" in TensorFlow 2.21); at multiples of 32 those resizes are pixel repetitions (reshapes).
"""
from __future__ import annotations

import os
import pathlib
from typing import Callable

import numpy as np

from bisenet_jax.export.metadata import METADATA_NAME, ExportError, ExportInfo

TFLITE_MULTIPLE = 32


def export_tflite(logits_fn: Callable, path: str | os.PathLike, info: ExportInfo) -> pathlib.Path:
    """Write ``logits_fn`` ((N, H, W, 3) -> (N, H, W, C), weights closed over) as a ``.tflite`` file."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    if info.height is None:
        if info.multiple_of != TFLITE_MULTIPLE:
            raise ExportError(f"a dynamic TFLite model takes multiples of {TFLITE_MULTIPLE} only; "
                              f"got multiple_of={info.multiple_of}")
        shapes, signature = ["b, 32*h, 32*w, 3"], [None, None, None, 3]
    else:
        shapes, signature = None, [1, info.height, info.width, 3]
    converted = jax2tf.convert(logits_fn, polymorphic_shapes=shapes, with_gradient=False)
    function = tf.function(converted, autograph=False, input_signature=[tf.TensorSpec(signature, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # ConverterError carries MLIR diagnostics
        lines = [line for line in str(error).splitlines() if "error:" in line][:3]
        raise ExportError(f"the TFLite converter failed for {info.model_name} at input {signature}: "
                          + ("; ".join(lines) or str(error)[:500])) from None
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(with_metadata(flatbuffer, info))
    return path


def with_metadata(flatbuffer: bytes, info: ExportInfo) -> bytes:
    """The flatbuffer with ``info`` as JSON in a metadata buffer named ``bisenet_jax`` (replaced if present)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) != METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(info.to_json().encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_tflite_info(path: str | os.PathLike) -> ExportInfo:
    """The ExportInfo in a ``.tflite`` file's ``bisenet_jax`` metadata buffer."""
    from ai_edge_litert import schema_py_generated as schema

    data = pathlib.Path(path).read_bytes()
    try:
        if not schema.Model.ModelBufferHasIdentifier(data, 0):
            raise ValueError("no TFL3 file identifier")
        model = schema.Model.GetRootAs(data, 0)
        entries = {_name(model.Metadata(i).Name()): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    except Exception as error:  # flatbuffer parsing raises assorted errors on garbage
        raise ExportError(f"{path}: cannot read it as a TFLite model ({error})") from None
    if METADATA_NAME not in entries:
        raise ExportError(f"{path}: has no {METADATA_NAME!r} metadata (metadata: {sorted(entries)}); "
                          "was it written by scripts/export.py?")
    return ExportInfo.from_json(model.Buffers(entries[METADATA_NAME]).DataAsNumpy().tobytes(), str(path))


def _name(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


class TFLiteRunner:
    """The LiteRT interpreter: NHWC float32 in, NHWC logits out, resized to each input's shape."""

    def __init__(self, path: str | os.PathLike, info: ExportInfo, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        except ValueError as error:
            raise ExportError(f"{path}: the LiteRT interpreter cannot load it ({error})") from None
        self.fixed_batch = not info.dynamic_batch
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.shape: tuple[int, ...] | None = None

    def _run(self, images: np.ndarray) -> np.ndarray:
        if images.shape != self.shape:
            self.interpreter.resize_tensor_input(self.input, images.shape, strict=False)
            self.interpreter.allocate_tensors()
            self.shape = images.shape
        self.interpreter.set_tensor(self.input, images)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()

    def __call__(self, images_nhwc: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images_nhwc, np.float32)
        if self.fixed_batch:
            return np.concatenate([self._run(images[i:i + 1]) for i in range(len(images))])
        return self._run(images)
