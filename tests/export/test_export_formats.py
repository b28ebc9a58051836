"""Each format's fp32 logits match JAX within 1e-4 of the largest logit, for V1-R18, V1-X39 and V2,
at three sizes for the dynamic formats (one not a multiple of 32 where the format allows it), and
each file carries the model's metadata."""
from __future__ import annotations

import json

import pytest

from bisenet_jax.export import ExportError, load_exported

MODELS = ("bisenetv1_r18", "bisenetv1_x39", "bisenetv2")
NUM_CLASSES = 5  # tests/export/conftest.py: random weights, demo dataset metadata
TOLERANCE = 1e-4  # of the largest logit
# (batch, height, width): a batch of 2 where the batch is dynamic; 100x140 is not a multiple of 32.
ANY_SIZES = ((2, 64, 96), (1, 96, 128), (1, 100, 140))
MULTIPLES_OF_32 = ((2, 64, 96), (1, 96, 128), (1, 128, 160))
DEMO_CLASSES = ["background", "disk", "box", "triangle", "ring"]


def _assert_parity(models, model_name, path, sizes):
    exported = load_exported(path)
    for batch, height, width in sizes:
        logits = exported.logits(models.images(batch, height, width))
        assert logits.shape == (batch, height, width, NUM_CLASSES)
        error = models.relative_error(logits, models.jax_logits(model_name, batch, height, width))
        assert error <= TOLERANCE, f"{path.name} at {batch}x{height}x{width}: {error:.2e}"
    return exported


def _assert_demo_metadata(info, model_name, fmt):
    assert (info.model_name, info.num_classes, info.format, info.dataset) == (model_name, NUM_CLASSES, fmt, "demo")
    assert list(info.class_names) == DEMO_CLASSES
    assert len(info.mean) == len(info.std) == 3 and len(info.palette) == NUM_CLASSES


@pytest.mark.parametrize("model_name", MODELS)
def test_onnx_has_dynamic_batch_height_and_width_and_matches_jax(models, model_name):
    onnx = pytest.importorskip("onnx")
    path = models.exported("onnx", model_name)
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (image,) = proto.graph.input
    dims = image.type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True] and dims[1].dim_value == 3
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["model_name"] == model_name and json.loads(props["class_names"]) == DEMO_CLASSES
    assert len(json.loads(props["mean"])) == 3 and len(json.loads(props["palette"])) == NUM_CLASSES
    exported = _assert_parity(models, model_name, path, ANY_SIZES)
    _assert_demo_metadata(exported.info, model_name, "onnx")


@pytest.mark.parametrize("model_name", MODELS)
def test_stablehlo_has_symbolic_batch_height_and_width_and_matches_jax(models, model_name):
    path = models.exported("stablehlo", model_name)
    exported = _assert_parity(models, model_name, path, ANY_SIZES)
    _assert_demo_metadata(exported.info, model_name, "stablehlo")
    assert (exported.info.height, exported.info.width, exported.info.multiple_of) == (None, None, 1)


@pytest.mark.parametrize("model_name", MODELS)
def test_dynamic_tflite_takes_multiples_of_32_and_matches_jax(models, model_name):
    path = models.exported("tflite", model_name)
    exported = _assert_parity(models, model_name, path, MULTIPLES_OF_32)
    _assert_demo_metadata(exported.info, model_name, "tflite")
    with pytest.raises(ExportError, match=r"multiples of 32, got 100x140"):
        exported.logits(models.images(1, 100, 140))


def test_fixed_size_tflite_takes_a_size_that_is_not_a_multiple_of_32(models):
    path = models.exported("tflite", "bisenetv2", (120, 160))
    exported = _assert_parity(models, "bisenetv2", path, ((2, 120, 160),))  # batch 1 in the file, run image by image
    assert (exported.info.height, exported.info.width, exported.info.dynamic_batch) == (120, 160, False)
    with pytest.raises(ExportError, match=r"exported for 120x160 inputs, got 96x128"):
        exported.logits(models.images(1, 96, 128))

