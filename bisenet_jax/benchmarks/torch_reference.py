"""The PyTorch side of the CamVid benchmark: the same recipe as the JAX run, in a plain PyTorch loop.

What is shared with the JAX side, so that only the framework differs:

- inputs: the numpy batches of ``bisenet_jax.data.create_train_iterator`` with the same data config
  and seed (batch t is the same array in both runs), transposed to NCHW at this boundary only;
- model: ``bisenet_jax.convert.torch_models.build_torch_model`` (the reference layout, the same
  initialisation schemes), in training mode with the auxiliary heads;
- loss: OHEM cross-entropy (``REFERENCE.md`` section 3) on the main and every auxiliary head;
- optimiser: SGD with momentum, weight decay on convolution weights only, ``head_lr_multiplier`` on
  the parameters of ``optimizer.head_modules``, the learning rate of every step taken from
  ``bisenet_jax.train.optim.warmup_poly_schedule``, on the same clock (``optimizer.schedule_clock``:
  the step, or the elapsed fraction of the budget through ``optim.BudgetClock``);
- budget: the clock starts before the first step, the weights of the learning curve's steps are
  saved inside it (as the JAX loop's checkpoints) and evaluated after it;
- evaluation: the eval batches of ``create_eval_dataset`` at full resolution, one confusion matrix
  (``bisenet_jax.evaluation.metrics``) over the split, ``compute_metrics``.

torch is imported only here (and in ``bisenet_jax.convert.torch_models``).
"""
from __future__ import annotations

import contextlib
import math
import pathlib
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bisenet_jax import data as data_lib
from bisenet_jax.benchmarks import machine
from bisenet_jax.convert.torch_models import build_torch_model, count_parameters
from bisenet_jax.evaluation import evaluator
from bisenet_jax.evaluation import metrics as metrics_lib
from bisenet_jax.train.optim import BudgetClock, schedule_clock, warmup_poly_schedule


def _loss_dtype(logits: torch.Tensor) -> torch.Tensor:
    """Logits in float32, or float64 for a float64 model (as ``bisenet_jax.train.losses``)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def ohem_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_label: int = 255,
                       thresh: float = 0.7, min_kept_divisor: int = 16) -> torch.Tensor:
    """Mean of the pixel losses above ``-ln(thresh)``, or of the ``n_valid // 16`` largest if fewer pass.

    ``logits`` (N, C, H, W), ``labels`` (N, H, W) int64; ignored pixels have loss 0 (and count as
    such among the largest), exactly as ``bisenet_jax.train.losses.ohem_cross_entropy``.
    """
    num_classes = logits.shape[1]
    valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
    safe_labels = torch.where(valid, labels, torch.zeros_like(labels))
    losses = F.cross_entropy(_loss_dtype(logits), safe_labels, reduction="none")
    losses = torch.where(valid, losses, torch.zeros_like(losses)).reshape(-1)
    n_min = int(valid.sum()) // min_kept_divisor
    hard = losses[losses > -math.log(thresh)]
    if hard.numel() < n_min:
        hard = losses.topk(n_min).values
    if hard.numel() == 0:  # nothing labelled and nothing hard: 0, like the JAX loss
        return losses.sum() * 0.0
    return hard.mean()


def segmentation_loss(logits: torch.Tensor, aux_logits: Sequence[torch.Tensor], labels: torch.Tensor,
                      loss_config: Any, ignore_label: int) -> tuple[torch.Tensor, dict[str, float]]:
    """loss(main) + aux_weight * sum(loss(aux_i)) with ``config.loss`` (OHEM or plain CE)."""
    if loss_config.name == "ohem":
        fn = lambda lg: ohem_cross_entropy(lg, labels, ignore_label, loss_config.ohem_thresh)
    elif loss_config.name == "ce":
        fn = lambda lg: F.cross_entropy(_loss_dtype(lg), labels, ignore_index=ignore_label)
    else:
        raise ValueError(f"unknown loss {loss_config.name!r}; expected 'ohem' or 'ce'")
    main = fn(logits)
    aux = [fn(a) for a in aux_logits]
    total = main + loss_config.aux_weight * sum(aux) if aux else main
    terms = {"loss_main": main.detach().item(), **{f"loss_aux{i + 1}": a.detach().item() for i, a in enumerate(aux)}}
    return total, terms


def param_groups(model: torch.nn.Module, optimizer_config: Any) -> list[dict[str, Any]]:
    """SGD parameter groups: (base | head) x (conv weights with weight decay | the rest without).

    A parameter is in the head group when the first component of its name is one of
    ``optimizer_config.head_modules`` (``ffm``, ``conv_out``, ... in the reference layout, the same
    top-level names as the Flax models). ``lr_scale`` is the group's learning-rate multiplier.
    """
    head_modules = set(optimizer_config.head_modules) if optimizer_config.head_lr_multiplier != 1.0 else set()
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        key = (name.split(".")[0] in head_modules, param.ndim == 4)
        groups.setdefault(key, []).append(param)
    return [{"params": params, "weight_decay": optimizer_config.weight_decay if decay else 0.0,
             "lr_scale": optimizer_config.head_lr_multiplier if head else 1.0, "name": f"{'head' if head else 'base'}"
             f"{'/decay' if decay else '/no_decay'}"} for (head, decay), params in sorted(groups.items())]


def create_optimizer(model: torch.nn.Module, optimizer_config: Any) -> torch.optim.Optimizer:
    """torch SGD mirroring ``bisenet_jax.train.optim.create_optimizer`` (SGD only)."""
    if optimizer_config.name != "sgd":
        raise ValueError(f"the PyTorch reference implements optimizer.name='sgd' only, got {optimizer_config.name!r}")
    if optimizer_config.grad_clip_norm > 0:
        raise ValueError("the PyTorch reference does not clip gradients; set optimizer.grad_clip_norm=0")
    return torch.optim.SGD(param_groups(model, optimizer_config), lr=optimizer_config.lr,
                           momentum=optimizer_config.momentum, nesterov=optimizer_config.nesterov)


def _schedule(optimizer_config: Any):
    """The JAX side's own schedule (``bisenet_jax.train.optim.warmup_poly_schedule``) of ``optimizer_config``."""
    return warmup_poly_schedule(optimizer_config.lr, optimizer_config.total_steps, optimizer_config.warmup_steps,
                                optimizer_config.warmup_start_factor, optimizer_config.poly_power,
                                optimizer_config.warmup)


def learning_rates(optimizer_config: Any, num_steps: int) -> np.ndarray:
    """The base learning rate of steps 0..num_steps-1, from the JAX schedule itself."""
    return np.asarray(_schedule(optimizer_config)(np.arange(num_steps)), np.float64)


def time_schedule(optimizer_config: Any) -> Callable[[float], float]:
    """The base learning rate at a virtual step of the time clock (``optim.BudgetClock.position``),
    from the JAX schedule itself (0.2 ms a call on this CPU, against a 1.2 s R18 step)."""
    schedule = _schedule(optimizer_config)
    return lambda position: float(schedule(np.float32(position)))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]


def to_torch(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """A pipeline batch {"image": (N, H, W, 3) float32, "label": (N, H, W) int32} -> NCHW float, int64."""
    images = torch.from_numpy(np.ascontiguousarray(np.asarray(batch["image"], np.float32).transpose(0, 3, 1, 2)))
    labels = torch.from_numpy(np.asarray(batch["label"]).astype(np.int64))
    return images, labels


def evaluate(model: torch.nn.Module, data_config: Any, split: str, batch_size: int, num_classes: int,
             class_names: Sequence[str] | None = None, size_divisor: int = 0) -> dict[str, Any]:
    """Single-scale evaluation at the original resolution with the shared metrics code.

    ``size_divisor`` > 1: each image padded at the bottom/right with 0 (the mean colour after
    normalisation) to multiples of it and the padding cut from the logits, the JAX evaluator's
    ``eval.size_divisor``."""
    size_divisor = evaluator.check_size_divisor(size_divisor)
    was_training = model.training
    model.eval()
    confusion = np.zeros((num_classes, num_classes), np.int64)
    num_images, start = 0, time.perf_counter()
    with torch.inference_mode():
        for batch in data_lib.create_eval_dataset(data_config, split, batch_size):
            images, _ = to_torch(batch)
            h, w = images.shape[2], images.shape[3]
            if size_divisor > 1 and (h % size_divisor or w % size_divisor):
                padded = F.pad(images, (0, -w % size_divisor, 0, -h % size_divisor))
                logits = model(padded)[:, :, :h, :w]
            else:
                logits = model(images)
            predictions = logits.argmax(dim=1).numpy()
            confusion += metrics_lib.to_host(metrics_lib.confusion_matrix(batch["label"], predictions, num_classes))
            num_images += sum(1 for i in batch["id"] if i != "")
    model.train(was_training)
    return {"mode": "ss", "size_divisor": size_divisor, **metrics_lib.compute_metrics(confusion),
            "num_images": num_images,
            "seconds": time.perf_counter() - start,
            "class_names": list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)],
            "confusion_matrix": confusion.tolist()}


def set_threads(num_threads: int = 0) -> int:
    """``torch.set_num_threads``: ``num_threads``, or 0 for every CPU this process may use; returns it."""
    num_threads = num_threads or machine.cpu_count()
    torch.set_num_threads(num_threads)
    return num_threads


def reference_model(config: Any) -> torch.nn.Module:
    """The PyTorch reference module of ``config.model`` (the reference layout and initialisation)."""
    return build_torch_model(config.model.name, config.model.num_classes, aux_heads=config.model.aux_heads)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
               loss_config: Any, ignore_label: int,
               autocast: torch.dtype | None = None) -> tuple[float, dict[str, float]]:
    """One SGD step of ``model`` (in training mode, auxiliary heads on): (total loss, its terms).

    ``autocast`` (e.g. ``torch.bfloat16``): forward and loss under ``torch.autocast`` to that dtype
    (mixed precision: float32 weights and optimizer, the loss in float32), backward outside it."""
    with torch.autocast(images.device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext():
        logits, aux_logits = model(images)
        loss, terms = segmentation_loss(logits, aux_logits, labels, loss_config, ignore_label)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach().item(), terms


def checkpoint_steps(config: Any) -> set[int]:
    """The steps whose weights are saved for the learning curve: every ``checkpoint_every`` and the last."""
    every, num_steps = int(config.train.checkpoint_every), int(config.train.num_steps)
    return set(range(every, num_steps + 1, every)) | {num_steps}


def train(config: Any, workdir: str | pathlib.Path, *, num_threads: int = 0,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``config`` with the PyTorch reference under ``config.train.time_budget_minutes``.

    Saves ``workdir/checkpoints/<step>.pth`` at the steps of :func:`checkpoint_steps` and where the
    budget stops the run (inside the budget, like the JAX loop's checkpoints) and writes
    ``workdir/metrics.jsonl`` with the JAX loop's keys (``train/loss``, ``train/lr``, ...; a record
    at every saved step, written when training reached it). Returns ``step``, ``stop_reason``,
    ``train_seconds`` (wall clock from before the first step to the stop), ``start_time`` (that
    start, ``time.time()``), ``checkpoints`` ({step: path}) and ``num_threads``.
    """
    from bisenet_jax.train.monitoring import MetricWriter

    if config.model.dtype != "float32":
        raise ValueError(f"the PyTorch reference trains in float32; got config.model.dtype={config.model.dtype!r}")
    workdir = pathlib.Path(workdir).absolute()
    (workdir / "checkpoints").mkdir(parents=True, exist_ok=True)
    num_threads = set_threads(num_threads)
    torch.manual_seed(config.train.seed)
    info = data_lib.get_dataset_info(config.data)
    model = reference_model(config).train()
    if config.train.init_checkpoint:
        load_initial_weights(model, config.train.init_checkpoint)
        log(f"torch: initialised from {config.train.init_checkpoint}")
    optimizer = create_optimizer(model, config.optimizer)
    num_steps, batch_size = int(config.train.num_steps), int(config.train.batch_size)
    time_clock = schedule_clock(config) == "time"
    lrs = None if time_clock else learning_rates(config.optimizer, num_steps)
    schedule = time_schedule(config.optimizer) if time_clock else None
    save_at = checkpoint_steps(config)
    data_iter = data_lib.create_train_iterator(config.data, batch_size, seed=config.train.seed)
    writer = MetricWriter(workdir, enabled=True)
    log(f"torch {torch.__version__} ({num_threads} threads): {config.model.name}, "
        f"{count_parameters(model):,} parameters; batch {batch_size}, "
        f"crop {tuple(config.data.crop_size)}; steps 0 -> {num_steps}; workdir {workdir}")

    budget_s = 60.0 * config.train.time_budget_minutes
    checkpoints: dict[int, str] = {}
    window: list[dict[str, float]] = []  # loss and terms of the steps since the last record (averaged, as JAX's)
    step, stop_reason = 0, "done"
    t_start = t_log = time.time()
    clock = BudgetClock(budget_s, config.optimizer.total_steps) if time_clock else None
    while step < num_steps:
        images, labels = to_torch(next(data_iter))
        if time_clock and step == 0:
            clock.begin()  # the schedule begins with the first step, as the JAX loop's after its compilation
        lr = schedule(clock.position()) if time_clock else lrs[step]
        set_learning_rate(optimizer, lr)
        loss, terms = train_step(model, optimizer, images, labels, config.loss, info.ignore_label)
        step += 1
        window.append({"loss": loss, **terms})
        if not math.isfinite(loss):
            raise FloatingPointError(f"PyTorch reference: non-finite loss ({loss}) at step {step}; lower "
                                     "optimizer.lr or check the labels (scripts/check_dataset.py)")
        over_budget = budget_s > 0 and step < num_steps and (
            clock.over_budget() if time_clock else time.time() - t_start > budget_s)
        if over_budget:
            stop_reason = f"time budget of {config.train.time_budget_minutes} min reached"
        save = step in save_at or over_budget
        if step % config.train.log_every == 0 or save:
            elapsed, t_log = time.time() - t_log, time.time()
            means = {key: float(np.mean([values[key] for values in window])) for key in window[0]}
            writer.scalars(step, {**means, "lr": lr,
                                  "images_per_second": len(window) * batch_size / max(elapsed, 1e-9)},
                           prefix="train/")
            window = []
        if save:
            path = workdir / "checkpoints" / f"{step}.pth"
            torch.save(model.state_dict(), path)
            checkpoints[step] = str(path)
            t_log = time.time()  # keep the save out of the throughput
        if over_budget:
            break
    train_seconds = time.time() - t_start
    writer.close()
    if stop_reason != "done":
        log(f"[torch] stopped at step {step}: {stop_reason}")
    return {"step": step, "stop_reason": stop_reason, "train_seconds": train_seconds, "start_time": t_start,
            "checkpoints": checkpoints, "num_threads": num_threads}


def check_init_checkpoint(path: str | pathlib.Path) -> None:
    """Refuses a ``train.init_checkpoint`` the reference cannot start from (anything but a PyTorch file)."""
    from bisenet_jax.convert.commands import is_torch_file

    if not is_torch_file(path):
        raise ValueError(f"train.init_checkpoint={str(path)!r}: the PyTorch reference starts from a PyTorch file "
                         "(.pth, .pt or .safetensors) only")


def load_initial_weights(model: torch.nn.Module, path: str | pathlib.Path) -> None:
    """``train.init_checkpoint`` for the reference: every weight of ``model`` from a PyTorch BiSeNet file
    (``.pth``/``.pt``/``.safetensors``, read by the converter's reader), strictly (same keys and shapes)."""
    from bisenet_jax import convert

    check_init_checkpoint(path)
    state_dict = {key: torch.from_numpy(np.array(value)) for key, value in convert.load_torch_checkpoint(path).items()}
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(f"{path}: not the weights of the reference's {type(model).__name__} with these classes: "
                         f"{error}") from None


def load_checkpoint(config: Any, path: str | pathlib.Path) -> torch.nn.Module:
    """The reference model of ``config`` with the weights saved by :func:`train` at ``path``."""
    model = reference_model(config)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


# -------------------------------------------------------------------------------------------------
# torch.compile (the benchmarks' --torch-compile rows)
# -------------------------------------------------------------------------------------------------


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile(model, dynamic=False)``: inductor, default mode, static shapes (one compile per
    input shape, as the benchmarks use one). Only the module's forward is compiled; in training the
    backward comes from AOTAutograd, the OHEM loss (data-dependent shapes) and the optimizer stay eager.
    The compiled module shares ``model``'s parameters: build the optimizer on ``model`` itself (its
    parameter names, which the head groups read, carry no ``_orig_mod.`` prefix). ``torch._dynamo`` is
    reset first, and inductor's in-memory kernel caches cleared (it keeps compiled kernels by source hash for
    the process's life), so that each call compiles afresh (what a benchmark's first-call time measures)."""
    from torch._inductor.utils import clear_inductor_caches

    torch._dynamo.reset()
    clear_inductor_caches()
    return torch.compile(model, dynamic=False)


def one_line(error: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message``, at most ``limit`` characters: the reason printed in a table."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".strip().rstrip(":")
    return text if len(text) <= limit else text[:limit - 3] + "..."


@contextlib.contextmanager
def fresh_inductor_cache():
    """A cold ``torch.compile``, as on a first run: ``TORCHINDUCTOR_CACHE_DIR`` (inductor's on-disk FX
    graph, AOTAutograd and compiled-kernel caches) points at a new temporary directory, removed at the
    end, unless the user set the variable (then it is kept, and the cache may be warm). Yields the
    sentence the benchmarks print in their protocol. (torch itself sets the variable to its default,
    ``/tmp/torchinductor_<user>``, when e.g. an optimizer first steps: that value does not count as set.)"""
    import os
    import tempfile

    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    user_dir = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if user_dir and os.path.abspath(user_dir) != os.path.abspath(default_cache_dir()):
        yield f"inductor cache TORCHINDUCTOR_CACHE_DIR={os.environ['TORCHINDUCTOR_CACHE_DIR']} (may be warm)"
        return
    with tempfile.TemporaryDirectory(prefix="torchinductor_benchmark_") as directory:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = directory
        try:
            yield "inductor cache: a fresh temporary directory (a cold compile, as on a first run)"
        finally:
            del os.environ["TORCHINDUCTOR_CACHE_DIR"]
