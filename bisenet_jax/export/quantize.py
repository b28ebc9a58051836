"""INT8 post-training static quantization of an exported ONNX model (onnxruntime, QDQ format).

Activations are calibrated on training images of the model's dataset (min/max over N images drawn
evenly across the split), normalised as the file's metadata says. Weights are symmetric int8, per
output channel by default; activations asymmetric uint8 (U8S8, what onnxruntime's x86 kernels run
fastest). Nodes named in ``keep_float`` (substrings of ONNX node names) stay in float32.
"""
from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Any, Iterator, Sequence

import numpy as np

from bisenet_jax.export.metadata import ExportError, ExportInfo


def data_config_for(dataset: str, root: str | None = None) -> Any:
    """The default ``config.data`` of ``dataset``, with ``root`` for datasets read from a folder."""
    from bisenet_jax.data import default_data_config

    config = default_data_config()
    config.name = dataset
    if root:
        config.root = root
    return config


def calibration_images(info: ExportInfo, num_images: int, *, data_root: str | None = None,
                       split: str = "train") -> list[np.ndarray]:
    """``num_images`` normalised (1, H, W, 3) float32 images of the model's dataset, evenly spaced over
    ``split``; resized to the model's fixed size if it has one. ``data_root``: the dataset's folder
    (the generated demo dataset needs none).
    """
    from bisenet_jax.data import create_source

    if num_images < 1:
        raise ExportError(f"--calibration-images must be at least 1, got {num_images}")
    if info.mean is None or info.std is None:
        raise ExportError(f"{info.model_name}: the export records no dataset, so there is nothing to calibrate "
                          "on; pass --dataset")
    source = create_source(data_config_for(info.dataset, data_root), split)
    indices = np.unique(np.linspace(0, len(source) - 1, min(num_images, len(source))).round().astype(int))
    mean, std = np.asarray(info.mean, np.float32), np.asarray(info.std, np.float32)
    images = []
    for index in indices:
        image = np.asarray(source[int(index)]["image"])
        if info.height is not None and image.shape[:2] != (info.height, info.width):
            from PIL import Image
            image = np.asarray(Image.fromarray(image).resize((info.width, info.height), Image.BILINEAR))
        images.append(((image.astype(np.float32) / 255.0 - mean) / std)[None])
    return images


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over NHWC images (the graph takes NCHW)."""

    def __init__(self, images: Sequence[np.ndarray]):
        self._images: Iterator[np.ndarray] = iter(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._images, None)
        return None if image is None else {"image": np.ascontiguousarray(image.transpose(0, 3, 1, 2))}


def quantize_onnx(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, images: Sequence[np.ndarray], *,
                  per_channel: bool = True, keep_float: Sequence[str] = ()) -> pathlib.Path:
    """Write the INT8 (QDQ) version of ``fp32_path`` calibrated on ``images``; the metadata is kept,
    with ``quantization`` describing what was done."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from bisenet_jax.export.onnx_model import read_onnx_info, set_metadata

    info = read_onnx_info(fp32_path)
    fp32 = onnx.load(str(fp32_path))
    excluded = sorted({node.name for node in fp32.graph.node if any(k in node.name for k in keep_float)})
    if keep_float and not excluded:
        raise ExportError(f"--int8-keep-float {list(keep_float)} matches no node of {fp32_path}")
    int8_path = pathlib.Path(int8_path)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = pathlib.Path(tmp) / "prepared.onnx"
        # Symbolic shape inference cannot follow the Resize sizes computed from the input shape.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(int8_path), _Reader(images), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=excluded)
    proto = onnx.load(str(int8_path))
    description = (f"int8 QDQ static, {len(images)} calibration images, "
                   f"{'per-channel' if per_channel else 'per-tensor'} weights"
                   + (f", {len(excluded)} nodes in float" if excluded else ""))
    set_metadata(proto, ExportInfo.from_dict({**info.to_dict(), "quantization": description}, str(int8_path)))
    onnx.save(proto, str(int8_path))
    return int8_path
