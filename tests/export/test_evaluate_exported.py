"""``scripts/evaluate.py --model FILE``: an exported model's mIoU is one command, equal to the checkpoint's."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from bisenet_jax import checkpoints

REPO = pathlib.Path(__file__).resolve().parents[2]


def _evaluate(tmp_path, *source):
    output = tmp_path / f"{source[0].lstrip('-')}.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "evaluate.py"), "--config", str(REPO / "configs" / "tiny.py"),
         *source, "--output", str(output), "--progress=false", "--config.data.demo.num_val=6"],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text())


@pytest.mark.parametrize("fmt", ["onnx", "stablehlo"])
def test_an_exported_file_evaluates_like_its_checkpoint(tmp_path, models, fmt):
    directory = checkpoints.save_model(tmp_path / "jax", models.variables("bisenetv2"), model_name="bisenetv2",
                                       num_classes=models.num_classes, dataset="demo")
    expected = _evaluate(tmp_path, "--checkpoint", str(directory))
    exported = _evaluate(tmp_path, "--model", str(models.exported(fmt, "bisenetv2")))
    assert exported["num_images"] == expected["num_images"] == 6
    assert exported["model"] == "bisenetv2"
    # The same argmax up to float32 ties: the confusion matrices agree to a handful of pixels.
    differing = sum(abs(a - b) for ra, rb in zip(exported["confusion_matrix"], expected["confusion_matrix"])
                    for a, b in zip(ra, rb))
    assert differing <= 20, (exported["confusion_matrix"], expected["confusion_matrix"])
    assert exported["miou"] == pytest.approx(expected["miou"], abs=1e-3)
