"""ONNX at a fixed height and width (what TensorRT engines want) keeps a dynamic batch; checked with
onnxruntime. (Moved from tests/convert when ONNX export moved to bisenet_jax.export.)"""
from __future__ import annotations

import numpy as np
import pytest

from bisenet_jax.export import ExportError, export_variables, load_exported

onnx = pytest.importorskip("onnx")


@pytest.mark.parametrize("model_name", ["bisenetv1_r18", "bisenetv2"])
def test_onnx_export_matches_jax_with_a_dynamic_batch(tmp_path, model_name, models):
    variables = models.random_variables(model_name, num_classes=11, seed=7)
    path = tmp_path / f"{model_name}.onnx"
    export_variables(variables, {"model_name": model_name, "num_classes": 11}, "onnx", path, size=(128, 160),
                     opset=17, check=False)

    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (image,) = proto.graph.input
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 128, 160]

    images = np.random.default_rng(0).standard_normal((3, 128, 160, 3)).astype(np.float32)  # batch 3 != 2 exported
    logits = load_exported(path).logits(images)
    assert logits.shape == (3, 128, 160, 11)
    from bisenet_jax.export.exporter import reference_logits
    assert models.relative_error(logits, reference_logits(model_name, 11, variables, images)) < 1e-4


def test_onnx_export_rejects_old_opsets(tmp_path, models):
    with pytest.raises(ExportError, match="opset 13 is too old"):
        export_variables(models.random_variables("bisenetv2"), {"model_name": "bisenetv2", "num_classes": 19}, "onnx",
                         tmp_path / "m.onnx", opset=13, check=False)
