r"""CamVid time-to-accuracy: BiSeNet trained for a wall-clock budget on this machine, then evaluated on val.

    python scripts/benchmark_camvid.py --model v1_r18 --root /data/camvid --compare-torch

Protocol (the JAX run and the PyTorch reference in ``torch_reference`` follow the same one):

1. Recipe: ``recipes.camvid_cpu_recipe(model)``, what ``configs/camvid_<model>_cpu.py`` return
   (crop, batch, augmentation, OHEM, SGD with 10x head learning rate, warmup then poly decay),
   trained from scratch: each side draws its initialisation from the seed, or with ``same_init``
   both start from the PyTorch reference's draw (``write_shared_init``).
2. Schedule fitted to the budget (``steps="fit"``, the default): before the budget starts, a short
   calibration runs the side's own training loop on a fresh model for ``CALIBRATION_WARMUP_STEPS``
   + ``CALIBRATION_STEPS`` steps and reads its logged throughput (the median window of
   ``CALIBRATION_WINDOW`` steps after the warm-up: ``calibrate``); then
   ``num_steps = 0.97 * (budget - compilation) / step time``, rounded down to a multiple of the
   learning curve's interval, with the warmup and the number of curve points kept in the config's
   proportions (``num_steps // eval_every``). Each framework is fitted to its own step time, so each
   schedule ends when its budget does; ``time_budget_minutes`` stops a run that turns out slower
   than calibrated (the machine got busier). ``steps="config"`` keeps the config's ``num_steps``
   (identical schedules, the budget only as a stop); an integer sets it.
   ``schedule_clock="time"`` puts both sides' learning-rate schedules on the budget's clock instead
   (``optimizer.schedule_clock``): the rate follows the elapsed fraction of the budget, so warmup
   and decay end when the budget does whatever the calibration said, and a calibration error changes
   only the number of steps, not where the schedule stands when training stops. The fitted
   ``num_steps`` then sets the warmup's share and the curve's interval, and the loop runs until the
   budget (its step cap is ``TIME_CLOCK_STEP_CAP`` times the fit).
3. Budget: training wall clock, from before the first train step to the last one. JAX compilation
   counts; so does saving the weights at the learning curve's steps (both sides). No evaluation
   runs inside the budget: eager PyTorch inference is several times slower than JAX's on this CPU,
   and that would decide a training benchmark.
4. Evaluation, after training: the saved weights of every curve step (the last one is the result),
   on the val split at its original 480x360, single scale (ss), one confusion matrix over the split,
   exact IoU (``bisenet_jax.evaluation.metrics``).
5. The two frameworks run one after the other in this process (JAX first), never at the same time;
   the CPU time other processes used during each run is recorded (and the load average before and
   after), and the report warns when it was more than a few percent (see ``busy_machine_warning``:
   PyTorch suffers most from a busy machine).
"""
from __future__ import annotations

import json
import pathlib
import shutil
import time
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from bisenet_jax import data as data_lib
from bisenet_jax.benchmarks import machine
from bisenet_jax.benchmarks.recipes import camvid_cpu_recipe
from bisenet_jax.evaluation import evaluator
from bisenet_jax.train.optim import SCHEDULE_CLOCKS

SAFETY = 0.97  # fraction of the remaining budget the fitted schedule plans to use
TIME_CLOCK_STEP_CAP = 2  # on the time clock the budget ends a run; num_steps is this many times the fit
PROTOCOL = ("from scratch; num_steps fitted to each side's calibrated step time (steps='fit') or as given; "
            "budget = training wall clock from before the first step (compilation and weight saves inside, no "
            "evaluation); the saved weights of each curve step evaluated afterwards on val, ss at full resolution, "
            "one confusion matrix, exact IoU; JAX then PyTorch, sequentially; learning rate on the step clock, "
            "or with schedule_clock='time' on the budget's clock (both sides)")


def load_config(model: str, root: str | pathlib.Path, config_file: str | pathlib.Path | None = None
                ) -> ml_collections.ConfigDict:
    """The CPU recipe of ``model`` (``recipes.camvid_cpu_recipe``), or the user's ``config_file``
    instead, pointed at the CamVid folder ``root``."""
    from bisenet_jax.train.config import config_from_file

    root = pathlib.Path(root)
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise FileNotFoundError(f"CamVid not found at {root}: expected the SegNet release's train/, trainannot/, "
                                "val/, valannot/ folders there; pass --root /path/to/camvid or set "
                                "BISENET_CAMVID_ROOT")
    config = config_from_file(config_file) if config_file else camvid_cpu_recipe(model)
    config.data.root = str(root)
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> None:
    """Applies ``["optimizer.lr=0.02", "data.crop_size=(256,320)", ...]`` (values as Python literals)."""
    import ast

    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not KEY=VALUE, e.g. optimizer.lr=0.02")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare string, e.g. loss.name=ce
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node[name]
        if leaf not in node:
            raise KeyError(f"override {item!r}: the config has no field {key!r}")
        node[leaf] = value


# ------------------------------------------------------------------------------------------------
# Fitting the schedule to the budget.


def curve_points(config: ml_collections.ConfigDict) -> int:
    """Points of the learning curve, the last at the end: the config's ``num_steps // eval_every``."""
    every = int(config.train.eval_every)
    return max(1, int(config.train.num_steps) // every) if every > 0 else 1


def scale_schedule(config: ml_collections.ConfigDict, num_steps: int) -> ml_collections.ConfigDict:
    """A copy of ``config`` with about ``num_steps`` steps, warmup and curve points in proportion.

    ``num_steps`` is rounded down to a multiple of the curve interval (``eval_every``, also
    ``checkpoint_every``), so that the last step is a curve point.
    """
    points = min(curve_points(config), int(num_steps))
    interval = max(1, int(num_steps) // points)
    old_steps, num_steps = int(config.train.num_steps), interval * points
    warmup = max(1, round(config.optimizer.warmup_steps * num_steps / old_steps))
    if num_steps <= warmup:
        raise ValueError(f"{num_steps} steps leave no room after a {warmup}-step warmup: the budget is too short "
                         "for this recipe (raise --budget-minutes or lower the crop size or batch size)")
    config = config.copy_and_resolve_references()  # total_steps no longer follows num_steps: both set here
    config.train.num_steps = num_steps
    config.optimizer.total_steps = num_steps
    config.optimizer.warmup_steps = warmup
    config.train.eval_every = interval
    config.train.checkpoint_every = interval
    return config


def fit_num_steps(calibration: dict[str, float], budget_minutes: float) -> int:
    """Steps that fill ``budget_minutes`` at the calibrated step time, after the first (compiling) step."""
    available = 60.0 * budget_minutes - calibration["startup_seconds"]
    steps = int(SAFETY * available / calibration["step_seconds"])
    if steps < 2:
        raise ValueError(f"a {budget_minutes}-minute budget leaves {available:.0f} s for training at "
                         f"{calibration['step_seconds']:.2f} s per step: raise --budget-minutes")
    return steps


# Untimed steps of the calibration after the first (compiling) one, on both sides. Measured here (X39
# CamVid recipe): with mimalloc (allocator.py) JAX's next ~10 steps are 15-40% slower than the steady
# state while the heap grows to the step's peak; the PyTorch reference's first ~30 steps of a fresh model
# ran at 10.1-10.6 images/s, 11.3-12.5 from step 40 on.
CALIBRATION_WARMUP_STEPS = 40

# Timed steps of the calibration, in windows of CALIBRATION_WINDOW steps; the step time is the median
# window's. Until session 13 the calibration timed single steps of a bare train step outside the loop (the
# median of 20, each waited for): in session 11 JAX calibrated 0.74 s and its loop ran at 0.85 s, in
# session 12 0.63 s against 0.72 s (its fitted schedule was cut by the budget at 2461 of 2748 steps, the
# learning rate still at 13% of its peak), while PyTorch's loop ran 6-10% faster than its calibration and
# left minutes unused. The calibration now runs each side's own training loop, the function the budgeted
# run calls, with its data, logging and saving, and reads the throughput the loop logs.
CALIBRATION_STEPS = 40
CALIBRATION_WINDOW = 10


def calibration_from_records(records: list[dict[str, Any]], batch_size: int, warmup_steps: int,
                             window: int = CALIBRATION_WINDOW) -> dict[str, Any]:
    """The calibration of a short loop run from its ``metrics.jsonl`` records (logged every ``window`` steps).

    ``step_seconds``: the median, over the logged windows that end after ``warmup_steps`` and are whole
    (their step a multiple of ``window``), of the window's seconds per step (``batch_size / images/s``).
    ``startup_seconds``: what the run spends before its steady steps: the compile time the JAX loop logs
    (``train/compile_seconds``), else the first window's excess over as many steady steps.
    """
    rates = {r["step"]: r["train/images_per_second"] for r in records if "train/images_per_second" in r}
    timed = [batch_size / rate for step, rate in sorted(rates.items())
             if step > warmup_steps and step % window == 0 and rate > 0]
    if not timed:
        raise ValueError(f"no whole window of {window} logged steps after the {warmup_steps} warm-up steps in the "
                         f"calibration run's metrics (logged steps: {sorted(rates)})")
    step_seconds = float(np.median(timed))
    compile_seconds = [r["train/compile_seconds"] for r in records if "train/compile_seconds" in r]
    if compile_seconds:
        startup = float(compile_seconds[0])
    else:
        first = min(rates)
        startup = max(0.0, first * batch_size / rates[first] - first * step_seconds)
    return {"step_seconds": step_seconds, "step_seconds_mean": float(np.mean(timed)), "step_seconds_each": timed,
            "startup_seconds": startup, "calibration_steps": len(timed) * window,
            "calibration_warmup_steps": warmup_steps, "calibration_window": window}


def calibration_config(config: ml_collections.ConfigDict, warmup_steps: int, steps: int,
                       window: int = CALIBRATION_WINDOW) -> ml_collections.ConfigDict:
    """``config`` for a calibration run: ``warmup_steps + steps`` steps (the first compiles), a log record
    every ``window`` steps, no evaluation, no budget, no predictions, one save at the end."""
    if window < 1 or steps < window or warmup_steps < 0:
        raise ValueError(f"a calibration needs steps >= window >= 1 and warmup_steps >= 0, got steps={steps}, "
                         f"window={window}, warmup_steps={warmup_steps}")
    config = config.copy_and_resolve_references()
    num_steps = warmup_steps + steps
    config.train.num_steps = num_steps
    config.optimizer.total_steps = num_steps
    config.optimizer.warmup_steps = min(int(config.optimizer.warmup_steps), num_steps - 1)
    config.train.log_every = window
    config.train.eval_every = -1
    config.train.checkpoint_every = num_steps
    # No budget; on the time clock (which needs one) a budget the calibration never reaches, so that
    # the calibration runs the loop the race will run (which waits for each step before the next).
    time_clock = config.optimizer.get("schedule_clock", "steps") == "time"
    config.train.time_budget_minutes = 1e6 if time_clock else 0.0
    config.train.progress_bar = False
    config.train.num_prediction_images = 0
    return config


def calibrate(side: str, config: ml_collections.ConfigDict, steps: int = CALIBRATION_STEPS,
              warmup_steps: int = CALIBRATION_WARMUP_STEPS, torch_threads: int = 0) -> dict[str, Any]:
    """Times ``side``'s own training loop (``train_and_evaluate`` or ``torch_reference.train``) on a fresh
    model for ``warmup_steps + steps`` steps in a temporary workdir, outside the budget: returns
    :func:`calibration_from_records` of its log, with ``cpu_step_seconds`` (the process's user + system
    time per step over the whole run, all threads). Nothing compiled here is reused by the budgeted run:
    its setup builds and compiles its step again, inside its budget.
    """
    import tempfile

    if side not in ("jax", "torch"):
        raise ValueError(f"side must be 'jax' or 'torch', got {side!r}")
    run_config = calibration_config(config, warmup_steps, steps)
    with tempfile.TemporaryDirectory(prefix=f"calibration_{side}_") as workdir:
        cpu = machine.cpu_seconds()
        if side == "jax":
            from bisenet_jax.train.loop import train_and_evaluate
            train_and_evaluate(run_config, workdir)
        else:
            from bisenet_jax.benchmarks import torch_reference
            torch_reference.train(run_config, workdir, num_threads=torch_threads, log=lambda _: None)
        cpu = machine.cpu_seconds() - cpu
        records = read_metrics(pathlib.Path(workdir) / "metrics.jsonl")
    calibration = calibration_from_records(records, int(config.train.batch_size), warmup_steps)
    calibration["cpu_step_seconds"] = cpu / int(run_config.train.num_steps)
    return calibration


# ------------------------------------------------------------------------------------------------
# The runs.


def read_metrics(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


def median_images_per_second(records: list[dict[str, Any]]) -> float:
    """Median training throughput over the logged windows (compilation and weight saves excluded)."""
    import numpy as np

    values = [r["train/images_per_second"] for r in records if "train/images_per_second" in r]
    return float(np.median(values)) if values else float("nan")


def jax_start_time(records: list[dict[str, Any]], fallback: float) -> float:
    """The JAX loop's clock start: its first record's time minus the compilation time it logs."""
    for record in records:
        if "train/compile_seconds" in record:
            return record["time"] - record["train/compile_seconds"]
    return fallback


def learning_curve(records: list[dict[str, Any]], t_start: float, evaluations: dict[int, dict[str, Any]]
                   ) -> tuple[list[dict[str, Any]], float]:
    """(curve rows, budgeted seconds): one row per evaluated step, at the time training reached it.

    Both loops write a ``train/loss`` record at every saved step when they reach it; the budgeted
    seconds run to the last such record.
    """
    train = {r["step"]: r for r in records if "train/loss" in r}
    curve = []
    for step in sorted(evaluations):
        reached = train[step]
        curve.append({"step": step, "minutes": (reached["time"] - t_start) / 60.0, "train_loss": reached["train/loss"],
                      "val_miou": evaluations[step]["miou"]})
    last = max((r["time"] for r in records if "train/loss" in r), default=t_start)
    return curve, last - t_start


# Each side's final weights are also evaluated with every val frame padded to multiples of this
# (``eval.size_divisor``): CamVid's 360 rows are not a multiple of BiSeNet's 32, and at 360x480 the
# 1/32 features are resized onto the 1/8 ones, a registration training crops never show; the
# padded figure separates that from the weights' quality (docs/benchmarks.md, session 42).
PADDED_DIVISOR = 32

BUSY_PERCENT = 10.0  # other processes' share of the CPUs during a side's run that makes it suspect


def busy_machine_warning(result: dict[str, Any]) -> str:
    """A warning when other processes used the CPUs while a side ran, else "".

    The measure is ``others_cpu_percent``: the CPU time other processes used during the side's
    training and evaluation, as a share of all CPUs (``machine.CpuUsage``).
    More than ``BUSY_PERCENT`` makes the comparison say more about the other jobs than about the
    frameworks: under such load PyTorch's OpenMP threads wait at every parallel region for a thread
    the kernel has descheduled (measured here: a small train step took 6 s with 2 threads and 0.08 s
    with 1 while another job used both cores). Results without the measure fall back to the
    1-minute load average before the run (over half the CPUs), which lags: it still counts the
    previous side's own run for about a minute.
    """
    cpus = result["environment"]["cpus"]
    busy = {}
    for side in ("jax", "torch"):
        if side not in result:
            continue
        others = result[side].get("others_cpu_percent")
        if others is not None and others == others:
            if others > BUSY_PERCENT:
                busy[side] = f"{side}: other processes used {others:.0f}% of the CPUs"
        elif result[side]["load_average_before"][0] > 0.5 * cpus:
            busy[side] = f"{side}: 1-minute load average {result[side]['load_average_before'][0]:.1f}"
    if not busy:
        return ""
    return (f"WARNING: the machine was busy during a run ({'; '.join(busy.values())}; {cpus} CPUs). "
            "Multi-threaded PyTorch is slowed disproportionately by other processes: do not compare these "
            "figures; rerun on an idle machine.")


def _summary(framework: str, config, trained: dict[str, Any], evaluations: dict[int, dict[str, Any]],
             records, t_start: float, calibration, load_before) -> dict[str, Any]:
    curve, train_seconds = learning_curve(records, t_start, evaluations)
    final = evaluations[max(evaluations)]
    keep = ("miou", "pixel_accuracy", "mean_accuracy", "iou", "accuracy", "class_names", "num_images",
            "confusion_matrix")
    return {"framework": framework, **{k: final[k] for k in keep}, "eval_seconds": final["seconds"],
            "step": trained["step"], "stop_reason": trained["stop_reason"], "train_seconds": train_seconds,
            "curve": curve, "num_steps": int(config.optimizer.total_steps),
            "schedule_clock": str(config.optimizer.schedule_clock),
            "warmup_steps": int(config.optimizer.warmup_steps), "curve_every": int(config.train.checkpoint_every),
            "batch_size": int(config.train.batch_size), "crop_size": list(config.data.crop_size),
            "cache_gb": float(config.data.get("cache_gb", 0.0)),
            "lr": float(config.optimizer.lr), "images_per_second": median_images_per_second(records),
            "num_threads": trained.get("num_threads"), "calibration": calibration,
            "load_average_before": load_before, "load_average_after": machine.load_average()}


def run_jax(config: ml_collections.ConfigDict, workdir: pathlib.Path, calibration=None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """``train_and_evaluate`` with checkpoints at the curve steps and no evaluation, then the evaluations.

    ``workdir`` must be fresh: the loop would resume a checkpoint found there.
    """
    from bisenet_jax import checkpoints
    from bisenet_jax.train.loop import train_and_evaluate
    from bisenet_jax.train.setup import build_model

    loop_config = config.copy_and_resolve_references()
    loop_config.train.eval_every = -1  # evaluations after the budget, from the checkpoints
    loop_config.train.keep_checkpoints = 1_000_000
    load_before, t_call = machine.load_average(), time.time()
    trained = train_and_evaluate(loop_config, workdir)
    load_after_training = machine.load_average()
    info = data_lib.get_dataset_info(config.data)
    model = build_model(config)
    manager, _ = checkpoints.open_checkpoint(workdir)
    with manager:
        steps = sorted(manager.all_steps())
    evaluations = {}
    for step in steps:
        variables, _ = checkpoints.load_model(workdir, step)
        batches = data_lib.create_eval_dataset(config.data, config.data.eval_split, config.eval.batch_size)
        evaluations[step] = evaluator.evaluate(model, variables, batches, info.num_classes, info.ignore_label,
                                               config.eval, progress=False, class_names=info.class_names)
        log(f"[jax] step {step}: val mIoU {evaluations[step]['miou']:.4f}")
    padded_config = config.eval.copy_and_resolve_references()
    with padded_config.unlocked():
        padded_config.size_divisor = PADDED_DIVISOR
    batches = data_lib.create_eval_dataset(config.data, config.data.eval_split, config.eval.batch_size)
    padded = evaluator.evaluate(model, variables, batches, info.num_classes, info.ignore_label, padded_config,
                                progress=False, class_names=info.class_names)
    log(f"[jax] step {steps[-1]}, inputs padded to multiples of {PADDED_DIVISOR}: val mIoU {padded['miou']:.4f}")
    records = read_metrics(pathlib.Path(workdir) / "metrics.jsonl")
    summary = _summary("jax", config, trained, evaluations, records, jax_start_time(records, t_call), calibration,
                       load_before)
    summary.update(padded_miou=padded["miou"], padded_iou=padded["iou"])
    summary["load_average_after"] = load_after_training
    return summary


def run_torch(config: ml_collections.ConfigDict, workdir: pathlib.Path, calibration=None, num_threads: int = 0,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """``torch_reference.train`` under the budget, then the evaluation of its saved weights."""
    from bisenet_jax.benchmarks import torch_reference

    load_before = machine.load_average()
    trained = torch_reference.train(config, workdir, num_threads=num_threads, log=log)
    load_after_training = machine.load_average()
    info = data_lib.get_dataset_info(config.data)
    evaluations = {}
    for step, path in sorted(trained["checkpoints"].items()):
        model = torch_reference.load_checkpoint(config, path)
        evaluations[step] = torch_reference.evaluate(model, config.data, config.data.eval_split,
                                                     config.eval.batch_size, info.num_classes, info.class_names)
        log(f"[torch] step {step}: val mIoU {evaluations[step]['miou']:.4f}")
    padded = torch_reference.evaluate(model, config.data, config.data.eval_split, config.eval.batch_size,
                                      info.num_classes, info.class_names, size_divisor=PADDED_DIVISOR)
    log(f"[torch] step {step}, inputs padded to multiples of {PADDED_DIVISOR}: val mIoU {padded['miou']:.4f}")
    records = read_metrics(pathlib.Path(workdir) / "metrics.jsonl")
    summary = _summary("torch", config, trained, evaluations, records, trained["start_time"], calibration,
                       load_before)
    summary.update(padded_miou=padded["miou"], padded_iou=padded["iou"])
    summary["load_average_after"] = load_after_training
    return summary


def _prepare_workdir(workdir: pathlib.Path, overwrite: bool) -> None:
    if workdir.exists() and any(workdir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"benchmark workdir {workdir} is not empty (a training workdir would resume, not "
                                  "start from scratch); pass a new --workdir or --overwrite to delete it")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)


def race_sides(compare_torch: bool = False, torch_only: bool = False, torch_first: bool = False) -> tuple[str, ...]:
    """The sides to run, in order: JAX alone, PyTorch alone, JAX then PyTorch, or PyTorch then JAX.

    Every race before session 38 ran JAX first, and in most of them JAX's loop ran below its calibration
    and PyTorch's above its own (docs/benchmarks.md): ``torch_first`` reverses the order, so that an
    effect of the order can be told apart from one of the framework."""
    if torch_only and (compare_torch or torch_first):
        raise ValueError("--torch-only runs the PyTorch side alone: drop --compare-torch and --torch-first")
    if torch_first and not compare_torch:
        raise ValueError("--torch-first orders the two sides of --compare-torch: add --compare-torch")
    if torch_only:
        return ("torch",)
    if compare_torch:
        return ("torch", "jax") if torch_first else ("jax", "torch")
    return ("jax",)


def run_benchmark(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, model: str = "",
                  budget_minutes: float = 30.0, sides: tuple[str, ...] = ("jax",), steps: str | int = "fit",
                  calibration_steps: int = CALIBRATION_STEPS, torch_threads: int = 0, overwrite: bool = False,
                  same_init: bool = False, schedule_clock: str = "steps",
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains each of ``sides`` ("jax", "torch") in turn, in that order, under ``budget_minutes``; returns
    every figure (``order``: the sides as they ran).

    ``steps``: "fit" (calibrate each side, see the module doc), "config" (the config's num_steps)
    or an int. ``same_init``: both sides start from the same weights (:func:`write_shared_init`).
    ``schedule_clock``: "steps" or "time", both sides' learning-rate clock (see the module doc).
    Writes ``workdir/{jax,torch}/`` and ``workdir/results.json``.
    """
    for side in sides:
        if side not in ("jax", "torch"):
            raise ValueError(f"unknown side {side!r}; expected 'jax' or 'torch'")
    if len(set(sides)) != len(sides):
        raise ValueError(f"sides={sides!r} names a side twice")
    if schedule_clock not in SCHEDULE_CLOCKS:
        raise ValueError(f"schedule_clock={schedule_clock!r}; expected one of {SCHEDULE_CLOCKS}")
    if same_init and config.train.init_checkpoint:
        raise ValueError(f"same_init: the config already starts from train.init_checkpoint="
                         f"{config.train.init_checkpoint!r}; both sides use it already, drop one of the two")
    if "torch" in sides and config.train.init_checkpoint:  # refused now, not after the JAX side's 30 minutes
        from bisenet_jax.benchmarks import torch_reference
        torch_reference.check_init_checkpoint(config.train.init_checkpoint)
    workdir = pathlib.Path(workdir).absolute()
    _prepare_workdir(workdir, overwrite)
    if same_init:
        config = config.copy_and_resolve_references()
        config.train.init_checkpoint = str(write_shared_init(config, workdir))
        log(f"both sides start from {config.train.init_checkpoint} (the PyTorch reference's initialisation, seed "
            f"{config.train.seed})")
    result = {"benchmark": "camvid", "model": model or config.model.name, "model_name": config.model.name,
              "budget_minutes": budget_minutes, "steps": steps, "dataset_root": str(config.data.root),
              "num_val_images": data_lib.num_examples(config.data, config.data.eval_split),
              "environment": machine.environment(), "protocol": PROTOCOL,
              "init_checkpoint": str(config.train.init_checkpoint), "schedule_clock": schedule_clock,
              "order": list(sides)}
    for side in sides:
        others = machine.others_cpu_percent()
        if others > BUSY_PERCENT:
            log(f"[{side}] WARNING: other processes are using {others:.0f}% of the {result['environment']['cpus']} "
                "CPUs: the timings will not be comparable")
        usage = machine.CpuUsage()
        side_config, calibration = _side_config(config, side, budget_minutes, steps, calibration_steps,
                                                torch_threads, log, schedule_clock)
        log(f"[{side}] {side_config.optimizer.total_steps} steps (warmup {side_config.optimizer.warmup_steps}, weights "
            f"saved every {side_config.train.checkpoint_every}), budget {budget_minutes} min, "
            f"load {machine.load_average()}")
        if side == "jax":
            result["jax"] = run_jax(side_config, workdir / "jax", calibration, log)
        else:
            result["torch"] = run_torch(side_config, workdir / "torch", calibration, torch_threads, log)
        result[side]["others_cpu_percent"] = usage.others_percent()
        log(f"[{side}] other processes used {result[side]['others_cpu_percent']:.1f}% of the CPUs during the run")
        result["warning"] = busy_machine_warning(result)
        evaluator.save_results(result, workdir / "results.json")  # strict JSON, NaN as null
    return result


def write_shared_init(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> pathlib.Path:
    """``workdir/init.pth``: the PyTorch reference's fresh initialisation (``torch.manual_seed(train.seed)``).

    Both sides set it as ``train.init_checkpoint`` (the JAX loop reads it through the converter, the
    reference loads it), so they start from the same weights and differ only in their arithmetic, their
    number of steps and (V2) their dropout masks: the initialisation's draw, one per framework otherwise,
    leaves the comparison.
    """
    import torch

    from bisenet_jax.benchmarks import torch_reference

    torch.manual_seed(config.train.seed)
    path = workdir / "init.pth"
    torch.save(torch_reference.reference_model(config).state_dict(), path)
    return path


def run_seeds(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, seeds: Sequence[int],
              **benchmark_options: Any) -> dict[str, Any]:
    """:func:`run_benchmark` once per seed (``workdir/seed_<s>``, the seed of both sides' weights and
    batches); returns the runs and, per side, the spread of the final val mIoU (``seeds.json`` too)."""
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"--seeds needs distinct seeds, got {list(seeds)}")
    workdir = pathlib.Path(workdir).absolute()
    runs = {}
    for seed in seeds:
        seeded = config.copy_and_resolve_references()
        seeded.train.seed = int(seed)
        runs[int(seed)] = run_benchmark(seeded, workdir / f"seed_{seed}", **benchmark_options)
    result = {"seeds": [int(s) for s in seeds], "spread": seed_spread(runs), "runs": runs}
    evaluator.save_results(result, workdir / "seeds.json")
    return result


def seed_spread(runs: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per side: mean, sample std (0 for one seed), min and max of the final val mIoU over the seeds."""
    spread = {}
    for side in ("jax", "torch"):
        values = {seed: float(run[side]["miou"]) for seed, run in runs.items() if side in run}
        if values:
            v = np.asarray(list(values.values()))
            spread[side] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                            "min": float(v.min()), "max": float(v.max()), "per_seed": values}
    return spread


def format_seed_spread(spread: dict[str, dict[str, Any]]) -> str:
    lines = []
    for side, s in spread.items():
        pct = {k: _pct(s[k]).strip() for k in ("mean", "min", "max")}
        per_seed = ", ".join(f"{seed}: {_pct(m).strip()}" for seed, m in s["per_seed"].items())
        lines.append(f"{side:>5} val mIoU over {len(s['per_seed'])} seeds: mean {pct['mean']}, std "
                     f"{100 * s['std']:.2f} points, min {pct['min']}, max {pct['max']} ({per_seed})")
    return "\n".join(lines)


def _side_config(config, side, budget_minutes, steps, calibration_steps, torch_threads, log, schedule_clock="steps"):
    calibration = None
    config = config.copy_and_resolve_references()
    config.optimizer.schedule_clock = schedule_clock
    if steps == "fit":
        log(f"[{side}] calibrating: the training loop for {CALIBRATION_WARMUP_STEPS} + {calibration_steps} steps, "
            f"the last {calibration_steps} timed in windows of {CALIBRATION_WINDOW} (outside the budget) ...")
        calibration = calibrate(side, config, calibration_steps, torch_threads=torch_threads)
        if side == "torch":
            calibration["num_threads"] = torch_threads or machine.cpu_count()
        calibration["load_average"] = machine.load_average()
        log(f"[{side}] calibration: {calibration['step_seconds']:.2f} s/step ({calibration['cpu_step_seconds']:.2f} "
            f"CPU s per step of the whole calibration run, setup included), startup "
            f"{calibration['startup_seconds']:.1f} s, load {calibration['load_average']}")
        side_config = scale_schedule(config, fit_num_steps(calibration, budget_minutes))
    elif steps == "config":
        side_config = scale_schedule(config, int(config.train.num_steps))
    else:
        side_config = scale_schedule(config, int(steps))
    side_config.train.time_budget_minutes = budget_minutes
    if schedule_clock == "time":
        side_config.train.num_steps = TIME_CLOCK_STEP_CAP * int(side_config.optimizer.total_steps)
        log(f"[{side}] learning rate on the budget's clock: the schedule spans {budget_minutes} min; "
            f"{side_config.optimizer.total_steps} steps expected, the budget ends the run")
    return side_config, calibration


# ------------------------------------------------------------------------------------------------
# Output.


def _pct(value) -> str:
    return "     -" if value is None or value != value else f"{100 * value:6.2f}"


def format_report(result: dict[str, Any]) -> str:
    """mIoU, per-class IoU and the learning curve of every side, side by side where both ran."""
    sides = [s for s in ("jax", "torch") if s in result]
    titles = {"jax": "JAX (bisenet_jax)", "torch": "PyTorch reference"}
    env = result["environment"]
    lines = [f"CamVid val ({result['num_val_images']} images, ss at full resolution): {result['model_name']}, budget "
             f"{result['budget_minutes']} min, {env['cpus']} CPUs, jax {env['jax']}"
             + (f", torch {env['torch']}" if "torch" in env else "")
             + (f"; {env['allocator']} (both sides)" if "allocator" in env else "")
             + (f"; initialised from {result['init_checkpoint']}" if result.get("init_checkpoint") else "")
             + (f"; ran {' then '.join(titles[s] for s in result['order'])}" if len(result.get("order", ())) > 1
                else ""), ""]
    width = 22
    lines.append(f"{'':<{width}}" + "".join(f"{titles[s]:>22}" for s in sides))

    def row(label, fn):
        lines.append(f"{label:<{width}}" + "".join(f"{fn(result[s]):>22}" for s in sides))

    row("val mIoU (%)", lambda r: _pct(r.get("miou")).strip())
    row(f"  padded to /{PADDED_DIVISOR} (%)", lambda r: _pct(r.get("padded_miou")).strip())
    row("pixel accuracy (%)", lambda r: _pct(r.get("pixel_accuracy")).strip())
    # On the time clock the budget ends a run and the fitted step count is what the schedule expected.
    planned = "expected" if any(result[s].get("schedule_clock") == "time" for s in sides) else "planned"
    row(f"steps done / {planned}", lambda r: f"{r['step']} / {r['num_steps']}")
    row("batch, crop", lambda r: f"{r['batch_size']}, {r['crop_size'][0]}x{r['crop_size'][1]}")
    row("train img/s (median)", lambda r: f"{r['images_per_second']:.2f}")
    row("budgeted minutes", lambda r: f"{r['train_seconds'] / 60:.1f}")
    row("eval seconds (after)", lambda r: f"{r['eval_seconds']:.1f}")
    row("others' CPU share (%)", lambda r: f"{r.get('others_cpu_percent', float('nan')):.1f}")
    row("load before / after", lambda r: f"{r['load_average_before'][0]:.1f} / {r['load_average_after'][0]:.1f}")
    row("stopped by", lambda r: "budget" if "budget" in r["stop_reason"] else r["stop_reason"])
    lines += ["", "per-class IoU (%)"]
    for i, name in enumerate(result[sides[0]]["class_names"]):
        row(f"  {name}", lambda r: _pct(r["iou"][i]).strip())
    for side in sides:
        lines += ["", f"learning curve, {titles[side]}",
                  f"{'step':>7} {'minutes':>8} {'train loss':>11} {'val mIoU %':>11}"]
        for point in result[side]["curve"]:
            lines.append(f"{point['step']:>7} {point['minutes']:>8.1f} {point['train_loss']:>11.4f} "
                         f"{_pct(point['val_miou']):>11}")
    if result.get("warning"):
        lines += ["", result["warning"]]
    return "\n".join(lines)
