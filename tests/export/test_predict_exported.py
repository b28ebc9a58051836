"""An exported file predicts the same label PNGs as the JAX path, with classes, normalisation and
colours from the file's own metadata."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bisenet_jax.data import create_source, default_data_config, get_dataset_info
from bisenet_jax.evaluation.predict import Predictor, predict_paths
from bisenet_jax.models import create_model

REPO = pathlib.Path(__file__).resolve().parents[2]
NUM_IMAGES = 3
DEMO_SIZE = (120, 160)  # the demo dataset's images: not a multiple of 32


@pytest.fixture(scope="module")
def demo_images(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("demo_images")
    source = create_source(default_data_config(), "val")
    for index in range(NUM_IMAGES):
        Image.fromarray(source[index]["image"]).save(folder / f"val_{index}.png")
    return folder


@pytest.fixture(scope="module")
def jax_labels(tmp_path_factory, demo_images, models) -> dict[str, np.ndarray]:
    """Label PNGs of the JAX path (the Flax model and the demo dataset's DatasetInfo)."""
    output = tmp_path_factory.mktemp("jax_predictions")
    model = create_model("bisenetv2", models.num_classes, aux_heads=False)
    predictor = Predictor(model, models.variables("bisenetv2"), get_dataset_info("demo"))
    predict_paths(predictor, [demo_images], output, ["labels"], progress=False)
    return _read_labels(output)


def _read_labels(output: pathlib.Path) -> dict[str, np.ndarray]:
    files = sorted((output / "labels").rglob("*.png"))
    assert len(files) == NUM_IMAGES
    return {f.name: np.asarray(Image.open(f)) for f in files}


@pytest.mark.parametrize("fmt,size", [("onnx", None), ("stablehlo", None), ("tflite", DEMO_SIZE)])
def test_exported_model_writes_the_same_label_pngs_as_jax(tmp_path, models, demo_images, jax_labels, fmt, size):
    from bisenet_jax.export import load_exported

    exported = load_exported(models.exported(fmt, "bisenetv2", size))
    predictor = Predictor(exported, {}, exported.info)  # normalisation and colours from the file
    predict_paths(predictor, [demo_images], tmp_path, ["labels"], progress=False)
    labels = _read_labels(tmp_path)
    assert labels.keys() == jax_labels.keys()
    for name, expected in jax_labels.items():
        np.testing.assert_array_equal(labels[name], expected, err_msg=name)
    palette = Image.open(next((tmp_path / "labels").rglob("*.png"))).getpalette()[:3 * models.num_classes]
    assert palette == [c for row in get_dataset_info("demo").palette for c in row.tolist()]


def test_predict_script_runs_an_exported_model(tmp_path, models, demo_images, jax_labels):
    path = models.exported("onnx", "bisenetv2")
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "predict.py"), "--model", str(path),
                          "--input", str(demo_images), "--output", str(tmp_path), "--outputs", "labels"],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "bisenetv2 (demo colours)" in run.stdout
    labels = _read_labels(tmp_path)
    for name, expected in jax_labels.items():
        np.testing.assert_array_equal(labels[name], expected, err_msg=name)


def test_a_stablehlo_file_runs_with_the_inference_options(monkeypatch, models):
    """Loaded for prediction, a StableHLO file is compiled as evaluation's programs are (``xla_flags``: on an
    x86 CPU without AVX-512, one YNNPACK option), with the same logits as under XLA's defaults."""
    from bisenet_jax import xla_flags
    from bisenet_jax.export import load_exported, runtime

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv(xla_flags.OPT_OUT, raising=False)
    path = models.exported("stablehlo", "bisenetv2")
    images = np.random.default_rng(0).standard_normal((1, 64, 96, 3)).astype(np.float32)
    real_jit, seen, logits = runtime.jax.jit, [], {}
    monkeypatch.setattr(runtime.jax, "jit", lambda fun, **kw: seen.append(kw) or real_jit(fun, **kw))
    for avx512 in (True, False):
        monkeypatch.setattr(xla_flags, "cpu_has_avx512", lambda cpuinfo=None, value=avx512: value)
        logits[avx512] = load_exported(path).logits(images)
    want = xla_flags.inference_options("cpu", {}, avx512=False)
    assert want and [kw.get("compiler_options") for kw in seen] == [None, want]
    assert logits[False].shape == (1, 64, 96, models.num_classes)
    np.testing.assert_allclose(logits[False], logits[True], rtol=1e-4, atol=1e-4 * np.abs(logits[True]).max())
