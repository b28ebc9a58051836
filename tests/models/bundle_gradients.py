"""Run by test_kernels.py in a subprocess (float64 must be on from the start): one model's training
loss and parameter gradients with the CPU kernel bundle and with XLA's, jitted, as JSON.

    python tests/models/bundle_gradients.py bisenetv2 64 96
"""
import json
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bisenet_jax.models import create_model, init_variables  # noqa: E402
from bisenet_jax.train.losses import segmentation_loss  # noqa: E402


def main(name: str, height: int, width: int) -> None:
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(2, height, width, 3)))
    labels = jnp.asarray(rng.integers(0, 5, size=(2, height, width)), jnp.int32)
    models = {k: create_model(name, 5, kernels=k, dtype=jnp.float64) for k in ("cpu", "xla")}
    variables = init_variables(models["xla"], 0)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), variables["params"])
    stats = jax.tree.map(lambda p: p.astype(jnp.float64), variables["batch_stats"])

    def loss_and_grads(kernels):
        def loss(params):
            (logits, aux), _ = models[kernels].apply({"params": params, "batch_stats": stats}, images, train=True,
                                                     mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})
            return segmentation_loss(logits, aux, labels, kernels=kernels)[0]

        return jax.jit(jax.value_and_grad(loss))(params)

    (cpu_loss, cpu_grads), (xla_loss, xla_grads) = loss_and_grads("cpu"), loss_and_grads("xla")
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(xla_grads))
    errors = {jax.tree_util.keystr(path): float(jnp.abs(a - b).max()) / scale
              for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(cpu_grads), jax.tree.leaves(xla_grads),
                                      strict=True)}
    worst = max(errors, key=errors.get)
    print(json.dumps({"loss": [float(cpu_loss), float(xla_loss)], "grad_scale": scale, "worst_param": worst,
                      "worst_error": errors[worst], "num_params": len(errors)}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
