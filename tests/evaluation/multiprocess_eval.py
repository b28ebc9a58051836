"""One process of a two-process evaluation on CPU (gloo), started by test_eval_multiprocess.py.

  python multiprocess_eval.py PORT PROCESS_ID OUT_JSON
"""
from __future__ import annotations

import json
import pathlib
import sys

import jax

port, process_id, out = int(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id)

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from conftest import tiny_model_and_variables  # noqa: E402

from bisenet_jax.evaluation import evaluator, metrics  # noqa: E402

model, variables = tiny_model_and_variables()
rng = np.random.default_rng(0)  # the same split in both processes; each takes every other image
images = rng.standard_normal((5, 40, 48, 3)).astype(np.float32)
labels = rng.integers(0, 4, (5, 40, 48)).astype(np.int32)
labels[rng.random(labels.shape) < 0.2] = 255
mine = list(range(process_id, 5, 2))
batches = [{"image": images[i:i + 1], "label": labels[i:i + 1], "id": [f"{i}"]} for i in mine]
results = evaluator.evaluate(model, variables, batches, 4, 255, progress=False)
big = metrics.sum_across_processes(np.array([2**40 + process_id, 3], np.int64))
out.write_text(json.dumps({"process_count": jax.process_count(), "confusion": results["confusion_matrix"],
                           "num_images": results["num_images"], "miou": results["miou"], "big": big.tolist()}))
