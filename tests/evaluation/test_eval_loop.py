"""The split-level evaluation loop, its JSON output, and one BiSeNet through the eval step."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bisenet_jax.evaluation import evaluator, metrics
from bisenet_jax.benchmarks.inference_speed import random_variables
from bisenet_jax.models import create_model

IGNORE = 255


def make_batches(images, labels, sizes, ids=None):
    batches, start = [], 0
    for size in sizes:
        batch = {"image": images[start:start + size], "label": labels[start:start + size]}
        batch["id"] = ids[start:start + size] if ids is not None else [f"img{i}" for i in range(start, start + size)]
        batches.append(batch)
        start += size
    return batches


@pytest.fixture(scope="module")
def split(tiny_images):
    images = np.concatenate([np.asarray(tiny_images), np.asarray(tiny_images[:1]) * -1.0])  # (3, 48, 64, 3)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (3, 48, 64)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.3] = IGNORE
    return images, labels


def test_evaluate_equals_numpy_metrics_of_the_predictions_with_a_padded_last_batch(tiny_model, split):
    model, variables = tiny_model
    images, labels = split
    results = evaluator.evaluate(model, variables, make_batches(images, labels, [2, 1]), 4, IGNORE,
                                 progress=False, class_names=["a", "b", "c", "d"])
    predictions = np.asarray(model.apply(variables, jnp.asarray(images))).argmax(-1)
    valid = labels != IGNORE
    expected = np.bincount(labels[valid] * 4 + predictions[valid], minlength=16).reshape(4, 4)
    np.testing.assert_array_equal(results["confusion_matrix"], expected)
    assert results["miou"] == pytest.approx(metrics.compute_metrics(expected)["miou"])
    assert results["num_images"] == 3 and results["num_pixels"] == valid.sum()
    assert results["mode"] == "ss" and results["class_names"] == ["a", "b", "c", "d"]


def test_padding_examples_with_empty_ids_are_not_counted(tiny_model, split):
    model, variables = tiny_model
    images, labels = split
    labels = labels.copy()
    labels[2] = IGNORE  # what the data pipeline pads shards with
    results = evaluator.evaluate(model, variables, make_batches(images, labels, [3], ids=["a", "b", ""]), 4, IGNORE,
                                 progress=False)
    assert results["num_images"] == 2
    assert results["num_pixels"] == int(np.sum(labels != IGNORE))


def test_results_are_saved_as_strict_json_with_null_for_undefined_classes(tiny_model, split, tmp_path):
    model, variables = tiny_model
    images, labels = split
    results = evaluator.evaluate(model, variables, make_batches(images, labels, [2, 1]), 6, IGNORE,
                                 progress=False)  # classes 4 and 5 never occur
    path = evaluator.save_results(results, tmp_path / "eval" / "results.json")
    text = path.read_text()
    loaded = json.loads(text)
    assert loaded["iou"][4] is None and loaded["iou"][5] is None
    assert loaded["miou"] == pytest.approx(results["miou"])
    assert loaded["confusion_matrix"] == results["confusion_matrix"]
    assert "NaN" not in text
    assert len(text.splitlines()) < 80  # one line per confusion row, not per number


def test_format_results_names_the_protocol_and_every_class(tiny_model, split):
    model, variables = tiny_model
    images, labels = split
    config = evaluator.default_eval_config()
    config.update(mode="msf", scales=(1.0,), flip=True)
    results = evaluator.evaluate(model, variables, make_batches(images, labels, [3]), 4, IGNORE, config,
                                 progress=False, class_names=["road", "sky", "car", "tree"])
    text = evaluator.format_results(results)
    assert "msf: scales (1.0,), flip" in text and "3 images" in text
    assert all(name in text for name in ("road", "sky", "car", "tree", "mIoU"))


def test_eval_step_of_a_bisenet_counts_every_labelled_pixel_once():
    model = create_model("bisenetv1_r18", 5, aux_heads=False)
    variables = random_variables(model, (1, 64, 96, 3))
    images = jax.random.normal(jax.random.key(0), (1, 64, 96, 3))
    labels = np.random.default_rng(1).integers(0, 5, (1, 64, 96)).astype(np.int32)
    labels[0, :10] = IGNORE
    confusion = np.asarray(evaluator.make_eval_step(model, 5)(variables, images, labels))
    assert confusion.shape == (5, 5) and confusion.sum() == 54 * 96
    np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(labels[0, 10:].ravel(), minlength=5))


def test_repeated_evaluations_reuse_one_compiled_eval_step(tiny_model, split):
    """Periodic validation during training must not recompile at every evaluation."""
    model, variables = tiny_model
    images, labels = split
    batches = make_batches(images, labels, [3])
    first = evaluator.evaluate(model, variables, batches, 4, IGNORE, progress=False)
    step = evaluator._eval_step(model, 4, evaluator.default_eval_config())
    compiled_before = step._cache_size()
    second = evaluator.evaluate(model, variables, batches, 4, IGNORE, evaluator.default_eval_config(), progress=False)
    assert step._cache_size() == compiled_before >= 1
    assert second["miou"] == first["miou"]


def test_the_cached_eval_step_follows_the_inference_options(monkeypatch, tiny_model, split):
    """The cache is keyed by the compiler options too: an evaluation after they change (here the CPU
    check, as on another machine; in use XLA_FLAGS or the opt-out) compiles with the new ones."""
    from bisenet_jax import xla_flags

    model, variables = tiny_model
    images, labels = split
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv(xla_flags.OPT_OUT, raising=False)
    evaluator._cached_eval_step.cache_clear()
    real_jit, seen, results = jax.jit, [], []
    monkeypatch.setattr(evaluator.jax, "jit", lambda fun, **kw: seen.append(kw.get("compiler_options")) or
                        real_jit(fun, **kw))
    for avx512 in (True, False, True):
        monkeypatch.setattr(xla_flags, "cpu_has_avx512", lambda cpuinfo=None, value=avx512: value)
        results.append(evaluator.evaluate(model, variables, make_batches(images, labels, [3]), 4, IGNORE,
                                          progress=False))
    want = xla_flags.inference_options("cpu", {}, avx512=False)
    assert want and seen == [None, want]  # the third evaluation reuses the first's step
    assert results[0]["confusion_matrix"] == results[2]["confusion_matrix"]
    assert results[0]["num_images"] == results[1]["num_images"] == 3


def test_evaluation_sharded_over_a_mesh_equals_the_local_evaluation(tiny_model, split):
    # What the training loop does: global batches over the mesh (padded to a multiple of its devices).
    model, variables = tiny_model
    images, labels = split
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    replicated = jax.device_put(variables, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    local = evaluator.evaluate(model, variables, make_batches(images, labels, [2, 1]), 4, IGNORE, progress=False)
    sharded = evaluator.evaluate(model, replicated, make_batches(images, labels, [2, 1]), 4, IGNORE,
                                 progress=False, sharding=sharding)
    assert sharded["confusion_matrix"] == local["confusion_matrix"]
    assert sharded["num_images"] == local["num_images"] == 3


def test_evaluation_sharded_over_four_devices_equals_one_device():
    import os
    import pathlib
    import subprocess
    import sys

    code = (
        "import jax, numpy as np, sys; sys.path.insert(0, %r)\n"
        "from conftest import tiny_model_and_variables\n"
        "from bisenet_jax.evaluation import evaluator\n"
        "model, variables = tiny_model_and_variables()\n"
        "rng = np.random.default_rng(0)\n"
        "images = rng.standard_normal((5, 40, 56, 3)).astype(np.float32)\n"
        "labels = rng.integers(0, 4, (5, 40, 56)).astype(np.int32)\n"
        "batches = lambda: [{'image': images[:3], 'label': labels[:3]}, {'image': images[3:], 'label': labels[3:]}]\n"
        "mesh = jax.make_mesh((4,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))\n"
        "sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))\n"
        "a = evaluator.evaluate(model, variables, batches(), 4, 255, progress=False)\n"
        "b = evaluator.evaluate(model, jax.device_put(variables, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())),"
        " batches(), 4, 255, progress=False, sharding=sharding)\n"
        "assert a['confusion_matrix'] == b['confusion_matrix'], (a['confusion_matrix'], b['confusion_matrix'])\n"
        "assert a['num_images'] == b['num_images'] == 5\n"
        "print('ok', sum(map(sum, a['confusion_matrix'])))\n"
    ) % str(pathlib.Path(__file__).parent)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["ok", str(5 * 40 * 56)]
