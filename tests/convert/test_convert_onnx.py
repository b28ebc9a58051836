"""ONNX export of JAX variables through the shipped PyTorch module, checked with onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxscript")  # the torch.export-based ONNX exporter needs it
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from bisenet_jax.convert.torch_onnx import export_onnx, onnx_logits


@pytest.mark.parametrize("model_name", ["bisenetv1_r18", "bisenetv2"])
def test_onnx_export_matches_jax_with_a_dynamic_batch(tmp_path, model_name, random_variables, jax_logits, rel_error):
    variables = random_variables(model_name, num_classes=11, seed=7)
    path = export_onnx(variables, model_name, tmp_path / f"{model_name}.onnx", input_size=(128, 160), opset=17)

    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (image,) = proto.graph.input
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 128, 160]

    images = np.random.default_rng(0).standard_normal((3, 128, 160, 3)).astype(np.float32)  # batch 3 != 2 exported
    logits = onnx_logits(path, images)
    assert logits.shape == (3, 128, 160, 11)
    assert rel_error(logits, jax_logits(model_name, variables, images)) < 1e-4


def test_onnx_export_rejects_old_opsets(tmp_path, random_variables):
    with pytest.raises(ValueError, match="opset 13 is too old"):
        export_onnx(random_variables("bisenetv2"), "bisenetv2", tmp_path / "m.onnx", opset=13)
