"""Deployment formats: ONNX, TFLite/LiteRT and serialized StableHLO, each carrying its metadata.

    from bisenet_jax.export import export_checkpoint, load_exported
    export_checkpoint("runs/demo", "onnx", "demo.onnx")            # dynamic N, H, W; checked against JAX
    model = load_exported("demo.onnx")
    logits = model.logits(images)   # (N, H, W, 3) float32, (x / 255 - mean) / std -> (N, H, W, C)
    model.info.class_names, model.info.mean, model.info.palette

Each module uses only those listed before it:

    metadata         ExportInfo: model, classes, mean/std, palette, input size; ExportError
    stablehlo_model  jax.export with symbolic batch/height/width, a .stablehlo zip archive
    onnx_model       ONNX through the PyTorch copy of the network (bisenet_jax.convert), onnxruntime runner
    tflite_model     jax2tf + TFLite converter, LiteRT runner
    runtime          load_exported -> ExportedModel (.logits, .apply, .info)
    quantize         INT8 static quantization of ONNX models, calibration images
    exporter         export_checkpoint / export_variables, parity checks against JAX
    measure          mIoU and latency of exported files (python -m bisenet_jax.export.measure)

Nothing in models/, data/, train/ or evaluation/ imports this package.
"""
from __future__ import annotations

from bisenet_jax.export.exporter import (EXPORT_FORMATS, check_parity, export_checkpoint, export_info,
                                         export_variables, inference_fn)
from bisenet_jax.export.metadata import ExportError, ExportInfo
from bisenet_jax.export.runtime import ExportedModel, format_of, load_exported

__all__ = [
    "EXPORT_FORMATS", "ExportError", "ExportInfo", "ExportedModel", "check_parity", "export_checkpoint",
    "export_info", "export_variables", "format_of", "inference_fn", "load_exported",
]
