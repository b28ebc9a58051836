"""A .stablehlo file loads with jax.export.deserialize in a process that never imports bisenet_jax."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

LOADER = """
import json, sys, zipfile
import jax, numpy as np
path, images, expected = sys.argv[1:4]
with zipfile.ZipFile(path) as archive:
    exported = jax.export.deserialize(archive.read("model.jax_exported"))
    metadata = json.loads(archive.read("metadata.json"))
logits = np.asarray(exported.call(np.load(images)))
error = np.abs(logits - np.load(expected)).max() / np.abs(np.load(expected)).max()
assert not any(name.startswith("bisenet_jax") for name in sys.modules), "bisenet_jax was imported"
print(metadata["model_name"], metadata["class_names"][1], logits.shape, f"{error:.3e}")
"""


def test_stablehlo_runs_in_a_process_without_bisenet_jax(tmp_path, models):
    path = models.exported("stablehlo", "bisenetv2")
    np.save(tmp_path / "images.npy", models.images(1, 100, 140))
    np.save(tmp_path / "expected.npy", models.jax_logits("bisenetv2", 1, 100, 140))
    run = subprocess.run([sys.executable, "-c", LOADER, str(path), str(tmp_path / "images.npy"),
                          str(tmp_path / "expected.npy")], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    name, second_class, *shape, error = run.stdout.split()
    assert (name, second_class, " ".join(shape)) == ("bisenetv2", "disk", "(1, 100, 140, 5)")
    assert float(error) <= 1e-4
