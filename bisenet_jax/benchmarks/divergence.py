"""Is a gap between two trainings a fault or chance? Two runs step by step from one start, beside a control.

    python scripts/compare_trajectories.py --recipe v2 --root /data/camvid --steps 30

Protocol: the recipe's JAX train step (``bisenet_jax.train.step``, jitted, float32) and the PyTorch
reference's (``torch_reference.train_step``) start from the same weights (the reference's draw with the
recipe's seed, or ``init_checkpoint``) and take the same batches (the recipe's training iterator,
drawn once) at the same learning rates (the schedule of ``config.optimizer`` on the step clock,
whatever its ``schedule_clock``; the JAX step compiled with the training loop's CPU compiler options,
``bisenet_jax/xla_flags.py``), with dropout off on both sides: dropout masks cannot be drawn alike in
two frameworks. Beside them runs a
control, the reference a second time with another ``torch.set_num_threads`` (the same arithmetic
summed in another order, nothing else different). After each reported step:

- ``loss``: the three runs' training losses (their first step's agree to float32 rounding: same
  weights, same batch); ``lr`` the reference's rate, ``jax_lr`` the one the JAX step used;
- ``jax_vs_torch`` and ``control_vs_torch``: the weight distance (:func:`weight_distance`) of the JAX
  run and of the control from the reference, and the tensor with the largest share of each gap.

A train step that differs from the reference by more than float32 rounding (a wrong loss term or
learning rate, a BatchNorm forward) shows in the first step's loss and distance, beyond the control's;
float32 rounding alone grows at the rate the control shows.

With ``float64_truth`` a fourth run takes the same steps: the reference in float64 (``.double()``, the
same batches in float64), which the float64 parity test (``tests/benchmarks/test_training_parity.py``)
shows to be the JAX step's own float64 result (to 1e-7 of the largest update or closer). Each report
then adds the three float32 runs' distances from it (``jax_vs_float64``, ``torch_vs_float64``,
``control_vs_float64``, in units of how far the float64 run moved): whether JAX's float32 arithmetic
strays further from the exact step than PyTorch's does. The BatchNorm running statistics are not
compared (they do not enter the training loss; the float64 parity test,
``tests/benchmarks/test_training_parity.py``, covers them), nor is dropout, which is off here;
:func:`compare_dropout` checks that both sides draw it from one distribution. In early V2
training on CamVid both distances pass 0.4 at the third step and 1 (the runs' weight gaps as large as
their updates) by the tenth: the gap between two such runs after 30 minutes is chance, and one race
cannot rank two frameworks on it (docs/benchmarks.md, session 20).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping

import numpy as np

from bisenet_jax import data as data_lib


def weight_distance(run: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                    start: Mapping[str, np.ndarray]) -> tuple[float, str]:
    """How far ``run`` is from ``reference``, in units of how far ``reference`` moved from ``start``.

    Over the ``*.weight`` tensors of the PyTorch layout (convolutions and BatchNorm scales) taken as one
    vector: ``||run - reference|| / ||reference - start||``; and the key of the tensor with the largest
    share of that gap. 0: the same weights; 1: as far apart as the whole training so far moved them.
    (One vector, not the worst tensor: early on some tensors have not moved at all in float32, a
    BatchNorm scale of 1 whose updates were below half a unit in the last place, and a tensor's own
    ratio would then be infinite.) Infinite only if ``reference`` did not move and ``run`` did.
    """
    gaps, moved = {}, 0.0
    for key, value in reference.items():
        if not key.endswith(".weight"):
            continue
        value = np.asarray(value, np.float64)
        moved += float(np.sum((value - np.asarray(start[key], np.float64)) ** 2))
        gaps[key] = float(np.sum((np.asarray(run[key], np.float64) - value) ** 2))
    if not gaps:
        raise ValueError("weight_distance: no '*.weight' tensors in the reference state_dict")
    gap = float(np.sqrt(sum(gaps.values())))
    key = max(gaps, key=gaps.get)
    if moved == 0:
        return (0.0 if gap == 0 else float("inf")), key
    return gap / float(np.sqrt(moved)), key


def _reference_run(config, state_dict, threads: int, double: bool = False, dropout: bool = False):
    import torch

    from bisenet_jax.benchmarks import torch_reference

    model = torch_reference.reference_model(config).train()
    keys = model.state_dict().keys()  # without auxiliary heads (model.aux_heads=False): the checkpoint's are left out
    model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state_dict.items() if k in keys},
                          strict=True)
    if double:
        model = model.double()  # parameters, buffers and (so) the momentum buffers in float64
    if not dropout:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return model, torch_reference.create_optimizer(model, config.optimizer), threads


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _setup(config: Any, num_batches: int, init_checkpoint: str, dropout: bool):
    """What both comparisons start from: the config on the step clock, the dataset info, the starting
    weights (PyTorch layout), ``num_batches`` batches of the recipe's training iterator, the JAX train
    state and its jitted step (with the training loop's CPU compiler options), and those options.
    ``dropout`` False: V2's dropout rate set to 0."""
    import jax
    import jax.numpy as jnp
    import torch

    from bisenet_jax import convert, xla_flags
    from bisenet_jax.benchmarks import torch_reference
    from bisenet_jax.convert.state_dict import from_torch_state_dict
    from bisenet_jax.models import create_model
    from bisenet_jax.train.optim import create_optimizer
    from bisenet_jax.train.state import TrainState
    from bisenet_jax.train.step import train_step

    if config.model.dtype != "float32":
        raise ValueError(f"the PyTorch reference trains in float32; got config.model.dtype={config.model.dtype!r}")
    config = config.copy_and_resolve_references()
    config.optimizer.schedule_clock = "steps"  # step by step: the rate of step t on both sides
    info = data_lib.get_dataset_info(config.data)
    if init_checkpoint:
        torch_reference.check_init_checkpoint(init_checkpoint)
        start = {k: np.asarray(v) for k, v in convert.load_torch_checkpoint(init_checkpoint).items()}
    else:
        torch.manual_seed(config.train.seed)
        start = {k: v.numpy().copy() for k, v in torch_reference.reference_model(config).state_dict().items()}
    batches = data_lib.create_train_iterator(config.data, int(config.train.batch_size), seed=config.train.seed)
    batches = [next(batches) for _ in range(num_batches)]

    no_dropout = {"dropout": 0.0} if config.model.name == "bisenetv2" and not dropout else {}
    model = create_model(config.model.name, info.num_classes, aux_heads=config.model.aux_heads,
                         kernels=config.model.kernels, **no_dropout)
    variables = from_torch_state_dict(start, config.model.name, aux_heads=config.model.aux_heads)
    tx, schedule = create_optimizer(config)
    state = TrainState.create(apply_fn=model.apply, params=jax.tree.map(jnp.asarray, variables["params"]), tx=tx,
                              batch_stats=jax.tree.map(jnp.asarray, variables["batch_stats"]),
                              rng=jax.random.PRNGKey(config.train.seed))
    step_options = xla_flags.train_step_options()
    step = jax.jit(lambda s, b: train_step(s, b, loss_name=config.loss.name, ignore_label=info.ignore_label,
                                           aux_weight=config.loss.aux_weight, ohem_thresh=config.loss.ohem_thresh,
                                           schedule=schedule, kernels=model.kernels),
                   compiler_options=step_options or None)
    return config, info, start, batches, state, step, step_options


def compare_trajectories(config: Any, num_steps: int, *, init_checkpoint: str = "", torch_threads: int = 0,
                         control_threads: int = 1, report_every: int = 1, float64_truth: bool = False,
                         log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Runs the protocol of this module for ``num_steps`` steps of ``config`` (a training config, e.g.
    ``recipes.camvid_cpu_recipe``); returns ``{"model", "steps": [per reported step], ...}``.

    ``torch_threads``: the reference's thread count (0: every CPU); ``control_threads``: the
    control's, which must differ from it. Steps 1, ``report_every``, 2 * ``report_every``... and the
    last are reported (each report converts the JAX weights to the PyTorch layout). ``float64_truth``:
    also run the reference in float64 (with ``torch_threads``) and report each float32 run's distance
    from it.
    """
    import jax.numpy as jnp

    from bisenet_jax.benchmarks import machine, torch_reference
    from bisenet_jax.convert.state_dict import to_torch_state_dict

    if num_steps < 1 or report_every < 1:
        raise ValueError(f"num_steps and report_every must be >= 1, got {num_steps} and {report_every}")
    torch_threads = torch_threads or machine.cpu_count()
    if control_threads == torch_threads:
        raise ValueError(f"control_threads ({control_threads}) must differ from torch_threads ({torch_threads}): "
                         "the control is the reference summed in another order")
    config, info, start, batches, state, step, step_options = _setup(config, num_steps, init_checkpoint,
                                                                    dropout=False)
    runs = {"torch": _reference_run(config, start, torch_threads),
            "control": _reference_run(config, start, control_threads)}
    if float64_truth:
        runs["float64"] = _reference_run(config, start, torch_threads, double=True)
    learning_rates = torch_reference.learning_rates(config.optimizer, num_steps)
    reports = []
    for t, batch in enumerate(batches):
        state, metrics = step(state, {"image": jnp.asarray(batch["image"]), "label": jnp.asarray(batch["label"])})
        losses = {"jax": float(metrics["loss"])}
        images, labels = torch_reference.to_torch(batch)
        for name, (module, optimizer, threads) in runs.items():
            torch_reference.set_learning_rate(optimizer, learning_rates[t])
            with _torch_threads(threads):
                losses[name], _ = torch_reference.train_step(
                    module, optimizer, images.double() if name == "float64" else images, labels, config.loss,
                    info.ignore_label)
        if t + 1 in (1, num_steps) or (t + 1) % report_every == 0:
            weights = {name: {k: v.detach().numpy() for k, v in module.state_dict().items()}
                       for name, (module, _, _) in runs.items()}
            weights["jax"] = to_torch_state_dict({"params": state.params, "batch_stats": state.batch_stats},
                                                 config.model.name, aux_heads=config.model.aux_heads)
            jax_gap, jax_key = weight_distance(weights["jax"], weights["torch"], start)
            control_gap, control_key = weight_distance(weights["control"], weights["torch"], start)
            report = {"step": t + 1, "lr": float(learning_rates[t]), "jax_lr": float(metrics["lr"]),
                      "loss": losses, "jax_vs_torch": jax_gap, "jax_vs_torch_key": jax_key,
                      "control_vs_torch": control_gap, "control_vs_torch_key": control_key}
            line = (f"step {t + 1:4d}  loss jax {losses['jax']:8.4f}  torch {losses['torch']:8.4f}  control "
                    f"{losses['control']:8.4f}  |  distance jax {jax_gap:9.3g}  control {control_gap:9.3g}")
            if float64_truth:
                for name in ("jax", "torch", "control"):
                    report[f"{name}_vs_float64"], report[f"{name}_vs_float64_key"] = weight_distance(
                        weights[name], weights["float64"], start)
                line += ("  |  from float64: jax {jax_vs_float64:9.3g}  torch {torch_vs_float64:9.3g}  "
                         "control {control_vs_float64:9.3g}").format(**report)
            reports.append(report)
            if log:
                log(line)
    return {"model": config.model.name, "batch_size": int(config.train.batch_size), "xla_options": step_options,
            "crop": list(config.data.crop_size), "torch_threads": torch_threads, "control_threads": control_threads,
            "init_checkpoint": init_checkpoint, "float64_truth": float64_truth, "steps": reports}


def compare_dropout(config: Any, draws: int, *, init_checkpoint: str = "", torch_threads: int = 0,
                    log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Dropout, which the trajectories leave out: the first step with dropout on, ``draws`` times on each
    side from the same weights and batch (JAX: dropout keys 0..draws-1; PyTorch: ``torch.manual_seed``
    0..draws-1), V2's recipe. Masks cannot match across frameworks, but their distributions must: the
    mean update of the draws is then the same on both sides up to Monte Carlo error.

    Over the ``*.weight`` tensors as one vector, for all of them, the heads (``head``, ``aux*``) and the
    rest, in units of the norm of PyTorch's mean update: ``mean_gap`` = ||mean JAX - mean PyTorch||;
    ``chance`` = what that gap is expected to be if both sides draw from one distribution, estimated from
    each side's two halves of draws (their means' gap has expectation 2 sigma / sqrt(draws) per side,
    the cross-side gap sqrt(sigma_jax^2 + sigma_torch^2) / sqrt(draws)); ``spread_jax`` /
    ``spread_torch``: the mean distance of one draw from its side's mean, with its standard error; and the
    losses' means and standard deviations. Dropout off on one side shows as a zero spread; another rate
    shows first in the mean loss (0.3 for 0.1 did on a tiny set at 8 draws, where the updates' gap stayed
    within chance), and in the updates given enough draws. Memory: every draw's update is kept, in float64
    (V2: 42 MB per draw and side; 48 draws peaked at 12 GB of resident memory under mimalloc).
    """
    import jax
    import jax.numpy as jnp
    import torch

    from bisenet_jax.benchmarks import machine, torch_reference
    from bisenet_jax.convert.state_dict import to_torch_state_dict

    if config.model.name != "bisenetv2":
        raise ValueError(f"compare_dropout: {config.model.name} has no dropout (only bisenetv2 does)")
    if draws < 4:
        raise ValueError(f"compare_dropout needs draws >= 4 (two halves of at least 2), got {draws}")
    torch_threads = torch_threads or machine.cpu_count()
    config, info, start, (batch,), state, step, step_options = _setup(config, 1, init_checkpoint, dropout=True)
    # The heads' tensors last, so that each group below is a slice (a view) of one array per side.
    weight_keys = [k for k in start if k.endswith(".weight")]
    is_head = lambda k: k.startswith(("head.", "aux"))
    keys = [k for k in weight_keys if not is_head(k)] + [k for k in weight_keys if is_head(k)]
    num_rest = sum(int(np.prod(start[k].shape)) for k in keys if not is_head(k))
    jax_batch = {"image": jnp.asarray(batch["image"]), "label": jnp.asarray(batch["label"])}
    images, labels = torch_reference.to_torch(batch)
    rate = float(torch_reference.learning_rates(config.optimizer, 1)[0])

    def update(weights):
        return np.concatenate([(np.asarray(weights[k], np.float64) - start[k]).ravel() for k in keys])

    size = sum(int(np.prod(start[k].shape)) for k in keys)
    updates = {side: np.empty((draws, size)) for side in ("jax", "torch")}  # one row per draw
    losses = {"jax": [], "torch": []}
    for draw in range(draws):
        trained, metrics = step(state.replace(rng=jax.random.PRNGKey(draw)), jax_batch)
        trained = {"params": trained.params, "batch_stats": trained.batch_stats}
        updates["jax"][draw] = update(to_torch_state_dict(trained, config.model.name,
                                                          aux_heads=config.model.aux_heads))
        losses["jax"].append(float(metrics["loss"]))
        module, optimizer, threads = _reference_run(config, start, torch_threads, dropout=True)
        torch_reference.set_learning_rate(optimizer, rate)
        torch.manual_seed(draw)
        with _torch_threads(threads):
            loss, _ = torch_reference.train_step(module, optimizer, images, labels, config.loss, info.ignore_label)
        updates["torch"][draw] = update({k: v.detach().numpy() for k, v in module.state_dict().items()})
        losses["torch"].append(loss)

    half = draws // 2
    groups = {}
    for group, select in (("all", slice(None)), ("heads", slice(num_rest, None)), ("rest", slice(0, num_rest))):
        sides = {side: u[:, select] for side, u in updates.items()}
        means = {side: u.mean(0) for side, u in sides.items()}
        unit = float(np.linalg.norm(means["torch"]))
        halves = {side: float(np.linalg.norm(u[:half].mean(0) - u[half:2 * half].mean(0))) / unit
                  for side, u in sides.items()}
        row = {"mean_gap": float(np.linalg.norm(means["jax"] - means["torch"])) / unit,
               "chance": float(np.sqrt((halves["jax"] ** 2 + halves["torch"] ** 2) / 4))}
        for side, u in sides.items():
            distances = np.linalg.norm(u - means[side], axis=1) / unit
            row[f"spread_{side}"] = float(distances.mean())
            row[f"spread_{side}_error"] = float(distances.std() / np.sqrt(draws))
        groups[group] = row
        if log:
            log(f"{group:5s}  mean update gap {row['mean_gap']:.4f} (chance {row['chance']:.4f})  |  one draw's "
                f"spread: jax {row['spread_jax']:.4f} +- {row['spread_jax_error']:.4f}  "
                f"torch {row['spread_torch']:.4f} +- {row['spread_torch_error']:.4f}")
    loss_stats = {side: {"mean": float(np.mean(v)), "std": float(np.std(v))} for side, v in losses.items()}
    if log:
        log("loss: " + "  ".join(f"{side} {st['mean']:.5f} (sd {st['std']:.5f})" for side, st in loss_stats.items()))
    return {"model": config.model.name, "draws": draws, "batch_size": int(config.train.batch_size),
            "crop": list(config.data.crop_size), "xla_options": step_options, "torch_threads": torch_threads,
            "init_checkpoint": init_checkpoint, "lr": rate, "groups": groups, "loss": loss_stats}
