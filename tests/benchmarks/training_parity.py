"""Run by test_training_parity.py in a subprocess (float64 must be on from the start): two SGD steps of
one model's CamVid CPU recipe in JAX (the project's jitted ``train_step``, optimiser and loss) and in
the PyTorch reference of the CamVid benchmark (``bisenet_jax.benchmarks.torch_reference``), from the
same weights and on the same batches, everything in float64; prints the differences as JSON.

    python tests/benchmarks/training_parity.py v2

Dropout is the one random part of the step and cannot draw the same masks in both frameworks, so its
rate is set to 0 on both sides (V2's ``dropout`` option; the reference's ``nn.Dropout`` modules).
"""
import json
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bisenet_jax.benchmarks import torch_reference  # noqa: E402
from bisenet_jax.benchmarks.recipes import camvid_cpu_recipe  # noqa: E402
from bisenet_jax.convert.state_dict import to_torch_state_dict  # noqa: E402
from bisenet_jax.models import create_model, init_variables  # noqa: E402
from bisenet_jax.train.optim import create_optimizer  # noqa: E402
from bisenet_jax.train.state import TrainState  # noqa: E402
from bisenet_jax.train.step import train_step  # noqa: E402

IGNORE = 255
NUM_STEPS = 2  # the second step is the first with momentum


def main(recipe: str) -> None:
    torch.set_num_threads(1)
    config = camvid_cpu_recipe(recipe)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(NUM_STEPS):
        labels = rng.integers(0, 11, size=(2, 64, 96)).astype(np.int32)
        labels[:, :8] = IGNORE  # a band of ignored pixels
        # float32 images, as the pipeline's (the reference's to_torch reads them as float32)
        batches.append({"image": rng.normal(size=(2, 64, 96, 3)).astype(np.float32), "label": labels})

    no_dropout = {"dropout": 0.0} if config.model.name == "bisenetv2" else {}
    model = create_model(config.model.name, 11, dtype=jnp.float64, **no_dropout)
    variables = init_variables(model, 0)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), variables["params"])
    tx, schedule = create_optimizer(config)
    state = TrainState.create(apply_fn=model.apply, params=params, tx=tx, batch_stats=variables["batch_stats"],
                              rng=jax.random.PRNGKey(1))
    step = jax.jit(lambda s, b: train_step(s, b, loss_name=config.loss.name, ignore_label=IGNORE,
                                           aux_weight=config.loss.aux_weight, ohem_thresh=config.loss.ohem_thresh,
                                           schedule=schedule, kernels=model.kernels))

    def torch_layout(state):
        return to_torch_state_dict({"params": state.params, "batch_stats": state.batch_stats}, config.model.name,
                                   dtype=np.float64)

    initial = torch_layout(state)
    reference = torch_reference.reference_model(config).double().train()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in initial.items()}, strict=True)
    for module in reference.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    optimizer = torch_reference.create_optimizer(reference, config.optimizer)
    learning_rates = torch_reference.learning_rates(config.optimizer, NUM_STEPS)

    losses = []
    for t, batch in enumerate(batches):
        state, metrics = step(state, {"image": jnp.asarray(batch["image"], jnp.float64),
                                      "label": jnp.asarray(batch["label"])})
        torch_reference.set_learning_rate(optimizer, learning_rates[t])
        images, labels = torch_reference.to_torch(batch)
        torch_loss, _ = torch_reference.train_step(reference, optimizer, images.double(), labels, config.loss, IGNORE)
        losses.append([float(metrics["loss"]), torch_loss])

    trained = torch_layout(state)
    expected = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    params = [k for k in trained if k.rsplit(".", 1)[-1] in ("weight", "bias")]
    stats = [k for k in trained if k.rsplit(".", 1)[-1] in ("running_mean", "running_var")]
    largest_update = max(np.abs(expected[k] - initial[k]).max() for k in params)
    param_errors = {k: float(np.abs(trained[k] - expected[k]).max() / largest_update) for k in params}
    # Running statistics are stored in float32 (flax's BatchNorm). A running mean is compared in units
    # of its channel's running standard deviation (some are ~0: a BN's output through a bias-free conv).
    def stat_error(key):
        if key.endswith("running_var"):
            return float(np.abs(trained[key] / expected[key] - 1).max())
        scale = np.sqrt(expected[key.replace("running_mean", "running_var")])
        return float((np.abs(trained[key] - expected[key]) / scale).max())

    stat_errors = {k: stat_error(k) for k in stats}
    worst_param = max(param_errors, key=param_errors.get)
    worst_stat = max(stat_errors, key=stat_errors.get)
    print(json.dumps({"model": config.model.name, "losses": losses, "num_params": len(params),
                      "num_stats": len(stats), "largest_update": float(largest_update),
                      "head_lr_multiplier": float(config.optimizer.head_lr_multiplier),
                      "worst_param": worst_param, "worst_param_error": param_errors[worst_param],
                      "worst_stat": worst_stat, "worst_stat_error": stat_errors[worst_stat]}))


if __name__ == "__main__":
    main(sys.argv[1])
