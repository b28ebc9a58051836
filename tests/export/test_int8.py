"""INT8 static quantization of ONNX models (QDQ), calibrated on demo training images."""
from __future__ import annotations

import numpy as np
import pytest

from bisenet_jax.export import load_exported
from bisenet_jax.export.quantize import calibration_images, quantize_onnx

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def fp32(models):
    return load_exported(models.exported("onnx", "bisenetv2"))


@pytest.fixture(scope="module")
def calibration(fp32):
    return calibration_images(fp32.info, 4)


def test_calibration_images_are_normalised_demo_training_images(fp32, calibration):
    assert len(calibration) == 4 and calibration[0].shape == (1, 120, 160, 3)
    pixels = np.concatenate([image.reshape(-1, 3) for image in calibration])
    assert np.all(np.abs(pixels.mean(0)) < 0.5) and np.all(np.abs(pixels.std(0) - 1) < 0.5)  # ~ (x - mean) / std


@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_model_has_int8_weights_keeps_dynamic_sizes_and_follows_fp32(tmp_path, fp32, calibration, models,
                                                                            per_channel):
    path = quantize_onnx(fp32.path, tmp_path / "int8.onnx", calibration, per_channel=per_channel)
    proto = onnx.load(str(path))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    weight_scales = [init for init in proto.graph.initializer if init.name.endswith("weight_scale")]
    per_output_channel = [len(s.dims) == 1 and s.dims[0] > 1 for s in weight_scales]
    assert weight_scales and (any(per_output_channel) if per_channel else not any(per_output_channel))
    int8 = load_exported(path)
    assert int8.info.quantization.startswith("int8 QDQ static, 4 calibration images")
    assert int8.info.class_names == fp32.info.class_names
    for size in ((1, 120, 160), (2, 96, 128)):
        images = models.images(*size)
        expected, got = fp32.logits(images), int8.logits(images)
        assert got.shape == expected.shape
        assert models.relative_error(got, expected) < 0.15
        assert (got.argmax(-1) == expected.argmax(-1)).mean() > 0.9


def test_keep_float_names_no_node_is_an_error(tmp_path, fp32, calibration):
    from bisenet_jax.export import ExportError
    with pytest.raises(ExportError, match=r"--int8-keep-float \['no_such_node'\] matches no node"):
        quantize_onnx(fp32.path, tmp_path / "int8.onnx", calibration, keep_float=["no_such_node"])
