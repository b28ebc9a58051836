"""One export path for every format: checkpoint -> file -> parity check against JAX.

:func:`export_checkpoint` reads a checkpoint (``bisenet_jax.checkpoints.load_model``), builds the
inference function with XLA's own kernels (the CPU-specific forms of training are custom-gradient
code with nothing to offer an exporter), writes the file, loads it back with
:func:`~bisenet_jax.export.runtime.load_exported` and compares its logits with the JAX model's on
random inputs: ``max |exported - jax| / max |jax|`` per size.
"""
from __future__ import annotations

import functools
import os
import pathlib
import tempfile
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from bisenet_jax.export.metadata import MIN_SIDE, ExportError, ExportInfo, dataset_fields
from bisenet_jax.export.runtime import load_exported

EXPORT_FORMATS = ("onnx", "tflite", "stablehlo")
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "stablehlo": ".stablehlo"}
LAYOUTS = {"onnx": "NCHW", "tflite": "NHWC", "stablehlo": "NHWC"}
# Sizes of the parity check of a dynamic export (the second is not a multiple of 32).
CHECK_SIZES = ((96, 128), (100, 140))
TFLITE_CHECK_SIZES = ((96, 128), (128, 160))
PARITY_TOLERANCE = 1e-4


def inference_fn(variables: Mapping[str, Any], model_name: str, num_classes: int) -> Callable[[jax.Array], jax.Array]:
    """``images (N, H, W, 3) -> logits (N, H, W, C)`` in eval mode, weights closed over, XLA kernels."""
    from bisenet_jax.models import create_model

    model = create_model(model_name, int(num_classes), aux_heads=False, kernels="xla")
    weights = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
    return lambda images: model.apply(weights, images, train=False)


def export_info(checkpoint_info: Mapping[str, Any], fmt: str, size: Sequence[int] | None,
                dataset: Any = None) -> ExportInfo:
    """The metadata of an export of ``fmt`` at a fixed ``size`` (H, W), or dynamic with ``size=None``."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    if size is not None:
        height, width = (int(s) for s in size)
        if min(height, width) < MIN_SIDE:
            raise ExportError(f"unsupported input size {height}x{width}: both sides must be at least {MIN_SIDE} "
                              "(the networks downsample by 32)")
    else:
        height = width = None
    return ExportInfo(model_name=str(checkpoint_info["model_name"]), num_classes=int(checkpoint_info["num_classes"]),
                      format=fmt, layout=LAYOUTS[fmt], height=height, width=width,
                      dynamic_batch=not (fmt == "tflite" and size is not None),
                      multiple_of=32 if (fmt == "tflite" and size is None) else 1,
                      **dataset_fields(checkpoint_info, dataset))


def export_variables(variables: Mapping[str, Any], checkpoint_info: Mapping[str, Any], fmt: str,
                     output: str | os.PathLike, *, size: Sequence[int] | None = None, dataset: Any = None,
                     opset: int = 17, int8: bool = False, calibration_images: int = 64,
                     per_channel: bool = True, keep_float: Sequence[str] = (), data_root: str | None = None,
                     check: bool = True) -> dict[str, Any]:
    """Write ``variables`` as ``fmt`` to ``output``; returns what was written and, with ``check``, the
    parity per size (``parity``: ``{"HxW": relative error}``; for INT8 also ``fp32_parity``)."""
    model_name = checkpoint_info.get("model_name")
    if not model_name:
        raise ExportError(f"the checkpoint records no model name (its metadata has {sorted(checkpoint_info)}); "
                          "it cannot be exported without knowing which network it is")
    output = pathlib.Path(output)
    if output.suffix.lower() != SUFFIXES.get(fmt, output.suffix.lower()):
        raise ExportError(f"--output {output}: a {fmt} file must end in {SUFFIXES[fmt]}")
    if int8 and fmt != "onnx":
        raise ExportError(f"--int8 is implemented for ONNX only (onnxruntime static quantization), not {fmt}")
    info = export_info(checkpoint_info, fmt, size, dataset)
    result: dict[str, Any] = {"format": fmt, "output": str(output), "model_name": info.model_name,
                              "num_classes": info.num_classes, "dataset": info.dataset,
                              "size": "dynamic" if size is None else f"{info.height}x{info.width}"}
    if int8:
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = _write(variables, info, pathlib.Path(tmp) / "fp32.onnx", opset)
            if check:
                result["fp32_parity"] = check_parity(fp32, variables)
            from bisenet_jax.export.quantize import calibration_images as calibration, quantize_onnx
            images = calibration(info, calibration_images, data_root=data_root)
            quantize_onnx(fp32, output, images, per_channel=per_channel, keep_float=keep_float)
    else:
        _write(variables, info, output, opset)
    if check:
        result["parity"] = check_parity(output, variables)
        result["max_relative_error"] = max(result["parity"].values())
    return result


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, output: str | os.PathLike,
                      **options: Any) -> dict[str, Any]:
    """:func:`export_variables` of a model directory or training workdir."""
    from bisenet_jax.checkpoints import load_model

    try:
        variables, info = load_model(checkpoint)
    except FileNotFoundError:
        raise
    except Exception as error:  # the checkpoint module's own errors name the step and the path
        raise ExportError(f"cannot read checkpoint {checkpoint}: {error}") from error
    if not info.get("model_name"):
        raise ExportError(f"checkpoint {checkpoint} records no model name (its metadata has {sorted(info)}); "
                          "save it with checkpoints.save_model(..., model_name=...) or convert it with "
                          "scripts/convert.py from-torch --model NAME")
    return export_variables(variables, info, fmt, output, **options)


def _write(variables, info: ExportInfo, output: pathlib.Path, opset: int) -> pathlib.Path:
    if info.format == "onnx":
        from bisenet_jax.export.onnx_model import export_onnx
        return export_onnx(variables, info.model_name, output, info, opset=opset)
    fn = inference_fn(variables, info.model_name, info.num_classes)
    if info.format == "tflite":
        from bisenet_jax.export.tflite_model import export_tflite
        return export_tflite(fn, output, info)
    from bisenet_jax.export.stablehlo_model import export_stablehlo
    return export_stablehlo(fn, output, info)


def check_sizes(info: ExportInfo) -> tuple[tuple[int, int], ...]:
    """The sizes a parity check runs at: the fixed size, or two sizes the dynamic model takes."""
    if info.height is not None:
        return ((info.height, info.width),)
    return TFLITE_CHECK_SIZES if info.multiple_of == 32 else CHECK_SIZES


def check_parity(path: str | os.PathLike, variables: Mapping[str, Any],
                 sizes: Sequence[tuple[int, int]] | None = None, seed: int = 0) -> dict[str, float]:
    """``{"HxW": max |file - jax| / max |jax|}`` on random normal batches (2 images where the batch is dynamic)."""
    model = load_exported(path)
    info = model.info
    batch = 2 if info.dynamic_batch else 1
    errors = {}
    for height, width in sizes or check_sizes(info):
        images = np.random.default_rng(seed).standard_normal((batch, height, width, 3)).astype(np.float32)
        expected = reference_logits(info.model_name, info.num_classes, variables, images)
        got = model.logits(images)
        errors[f"{height}x{width}"] = float(np.abs(got - expected).max() / np.abs(expected).max())
    return errors


def reference_logits(model_name: str, num_classes: int, variables: Mapping[str, Any], images: np.ndarray) -> np.ndarray:
    """The JAX model's eval logits, with the kernels training and evaluation use on this backend."""
    weights = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
    return np.asarray(_jitted_apply(model_name, int(num_classes))(weights, images))


@functools.lru_cache(maxsize=8)
def _jitted_apply(model_name: str, num_classes: int):
    from bisenet_jax.models import create_model

    model = create_model(model_name, num_classes, aux_heads=False)
    return jax.jit(lambda variables, images: model.apply(variables, images, train=False))
