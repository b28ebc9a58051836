"""Two CPU processes evaluate halves of a split: both report the confusion matrix of the whole split."""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

from bisenet_jax.evaluation import evaluator

HERE = pathlib.Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_sum_one_confusion_matrix_for_the_split(tmp_path, tiny_model):
    port = free_port()
    # A compilation cache of the run's own (tests/conftest.py): both processes find, or both miss, a program.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, str(HERE / "multiprocess_eval.py"), str(port), str(i),
                               str(tmp_path / f"{i}.json")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    outputs = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2)]

    # The same split evaluated in one process.
    model, variables = tiny_model
    rng = np.random.default_rng(0)
    images = rng.standard_normal((5, 40, 48, 3)).astype(np.float32)
    labels = rng.integers(0, 4, (5, 40, 48)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.2] = 255
    batches = [{"image": images[i:i + 1], "label": labels[i:i + 1], "id": [f"{i}"]} for i in range(5)]
    single = evaluator.evaluate(model, variables, batches, 4, 255, progress=False)

    for out in outputs:
        assert out["process_count"] == 2
        assert out["confusion"] == single["confusion_matrix"]
        assert out["num_images"] == 5
        assert out["miou"] == single["miou"]
        assert out["big"] == [2 * 2**40 + 1, 6]  # int64 counts survive the int32 transport
