r"""CamVid time-to-accuracy: BiSeNet trained for a wall-clock budget on this machine, then evaluated on val.

    python scripts/benchmark_camvid.py --model v1_r18 --compare-torch

Protocol (the JAX run and the PyTorch reference in ``torch_reference`` follow the same one):

1. Recipe: ``configs/camvid_<model>_cpu.py`` (crop, batch, augmentation, OHEM, SGD with 10x head
   learning rate, warmup then poly decay), trained from scratch.
2. Schedule fitted to the budget (``steps="fit"``, the default): before the budget starts, a short
   calibration times the train step after its compilation and an evaluation on a few val images;
   then ``num_steps = 0.97 * (budget - compilation - periodic evaluations) / step time``, with the
   warmup and the number of evaluations kept in the config's proportions. Each framework is fitted
   to its own step time, so each schedule ends when its budget does; ``time_budget_minutes`` stops
   a run that turns out slower than calibrated (the machine got busier). ``steps="config"`` keeps
   the config's ``num_steps`` (identical schedules, the budget as a stop), an integer sets it.
3. Budget: the clock starts before the first train step. JAX compilation and the periodic
   evaluations count against it; the final evaluation does not.
4. Evaluation: the val split at its original 480x360, single scale (ss), one confusion matrix over
   the split, exact IoU (``bisenet_jax.evaluation.metrics``).
5. The two frameworks run one after the other in this process (JAX first), never at the same time;
   the load average before and after each run is recorded, as the machine may be shared.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import platform
import resource
import shutil
import time
from typing import Any, Callable

import ml_collections

from bisenet_jax import data as data_lib

MODELS = {"v1_r18": "camvid_bisenetv1_r18_cpu", "v1_x39": "camvid_bisenetv1_x39_cpu", "v2": "camvid_bisenetv2_cpu"}
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_ROOT = REPO_ROOT.parent / "shared" / "data" / "camvid"
SAFETY = 0.97  # fraction of the remaining budget the fitted schedule plans to use
PROTOCOL = ("from scratch; num_steps fitted to each side's calibrated step time (steps='fit') or as given; "
            "budget clock from before the first train step, compilation and periodic evaluations inside it, "
            "final evaluation outside; val split, ss at full resolution, one confusion matrix, exact IoU; "
            "JAX then PyTorch, sequentially")


def load_config(model: str, root: str | pathlib.Path, config_file: str | pathlib.Path | None = None
                ) -> ml_collections.ConfigDict:
    """The CPU-budget config of ``model`` (a key of ``MODELS``) pointed at the CamVid folder ``root``."""
    from bisenet_jax.train.config import config_from_file

    if config_file is None:
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
        config_file = CONFIG_DIR / f"{MODELS[model]}.py"
    root = pathlib.Path(root)
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise FileNotFoundError(f"CamVid not found at {root}: expected the SegNet release's train/, trainannot/, "
                                "val/, valannot/ folders there; pass --root /path/to/camvid")
    config = config_from_file(config_file)
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


def scale_schedule(config: ml_collections.ConfigDict, num_steps: int) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``num_steps`` steps; warmup and evaluation count kept in proportion.

    The config's ``num_steps // eval_every`` evaluations (the last one at the end) stay that many:
    ``eval_every = ceil(num_steps / evaluations)``.
    """
    config = config.copy_and_resolve_references()  # total_steps no longer follows num_steps: both set below
    old_steps, num_steps = int(config.train.num_steps), int(num_steps)
    warmup = max(1, round(config.optimizer.warmup_steps * num_steps / old_steps))
    if num_steps <= warmup:
        raise ValueError(f"{num_steps} steps leave no room after a {warmup}-step warmup: the budget is too short "
                         "for this recipe (raise --budget-minutes or lower the crop size or batch size)")
    config.train.num_steps = num_steps
    config.optimizer.total_steps = num_steps
    config.optimizer.warmup_steps = warmup
    if config.train.eval_every > 0:
        evaluations = max(1, old_steps // config.train.eval_every)
        config.train.eval_every = math.ceil(num_steps / evaluations)
    config.train.checkpoint_every = max(num_steps, 1)
    return config


def num_periodic_evals(config: ml_collections.ConfigDict) -> int:
    """Evaluations before the last step (the ones that count against the budget)."""
    every = config.train.eval_every
    return (int(config.train.num_steps) - 1) // every if every > 0 else 0


def fit_num_steps(config: ml_collections.ConfigDict, calibration: dict[str, float], budget_minutes: float,
                  num_eval_images: int) -> int:
    """Steps that fill ``budget_minutes`` at the calibrated step and evaluation times (see the module doc)."""
    budget_s = 60.0 * budget_minutes
    eval_s = calibration["eval_seconds_per_image"] * num_eval_images
    # The number of periodic evaluations depends on num_steps only through the (fixed) evaluation count.
    evaluations = max(1, int(config.train.num_steps) // config.train.eval_every) if config.train.eval_every > 0 else 1
    periodic = evaluations - 1
    available = budget_s - calibration["startup_seconds"] - (calibration["eval_startup_seconds"] if periodic else 0)
    available -= periodic * eval_s
    steps = int(SAFETY * available / calibration["step_seconds"])
    if steps < 2:
        raise ValueError(f"a {budget_minutes}-minute budget leaves {available:.0f} s for training at "
                         f"{calibration['step_seconds']:.2f} s per step: raise --budget-minutes")
    return steps


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def calibrate_jax(config: ml_collections.ConfigDict, num_steps: int = 8, num_eval_images: int = 6) -> dict[str, float]:
    """Times the JAX train step (after compiling it) and the ss evaluation of a few val images.

    Fresh jitted functions, so nothing compiled here is reused by the budgeted run: it compiles
    again, inside its budget.
    """
    import jax

    from bisenet_jax.evaluation import evaluator
    from bisenet_jax.train.state import batch_sharding, build_model, create_mesh, create_train_state, replicated
    from bisenet_jax.train.step import compile_train_step

    info = data_lib.get_dataset_info(config.data)
    mesh = create_mesh(config.mesh.num_devices)
    model = build_model(config)
    crop_h, crop_w = config.data.crop_size
    state, schedule, shardings = create_train_state(config, model, mesh, jax.random.PRNGKey(config.train.seed),
                                                    (1, crop_h, crop_w, 3))
    step = compile_train_step(config, shardings, batch_sharding(mesh), replicated(mesh), schedule, info.ignore_label)
    batches = data_lib.create_train_iterator(config.data, config.train.batch_size, seed=config.train.seed)

    def timed_steps(n, state):
        start, cpu = time.perf_counter(), _cpu_seconds()
        for _ in range(n):
            state, metrics = step(state, data_lib.make_global_batch(next(batches), batch_sharding(mesh)))
        jax.block_until_ready(metrics)
        return state, time.perf_counter() - start, _cpu_seconds() - cpu

    state, startup, _ = timed_steps(1, state)
    state, seconds, cpu = timed_steps(num_steps, state)
    eval_step = evaluator.make_eval_step(model, info.num_classes, config.eval)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    times = []
    for i, batch in enumerate(data_lib.create_eval_dataset(config.data, config.data.eval_split, 1)):
        if i > num_eval_images:
            break
        start = time.perf_counter()
        jax.block_until_ready(eval_step(variables, batch["image"], batch["label"]))
        times.append(time.perf_counter() - start)
    return {"step_seconds": seconds / num_steps, "cpu_step_seconds": cpu / num_steps, "startup_seconds": startup,
            "eval_startup_seconds": times[0], "eval_seconds_per_image": min(times[1:]) if len(times) > 1 else times[0],
            "calibration_steps": num_steps}


# ------------------------------------------------------------------------------------------------
# The runs.


def read_metrics(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


def median_images_per_second(records: list[dict[str, Any]]) -> float:
    """Median training throughput over the logged windows (compilation and evaluations excluded)."""
    import numpy as np

    values = [r["train/images_per_second"] for r in records if "train/images_per_second" in r]
    return float(np.median(values)) if values else float("nan")


def jax_learning_curve(records: list[dict[str, Any]], t_start: float) -> tuple[list[dict[str, Any]], float]:
    """(curve rows, budgeted seconds) from the JAX loop's metrics.jsonl.

    The clock start is the loop's own (the time of the first record minus the compilation time it
    logs), ``t_start`` when that record is absent. Each evaluation is preceded by a train record of
    the same step, written when training reached it: its time is the curve's ``minutes``.
    """
    compile_records = [r for r in records if "train/compile_seconds" in r]
    if compile_records:
        t_start = compile_records[0]["time"] - compile_records[0]["train/compile_seconds"]
    train = {r["step"]: r for r in records if "train/loss" in r}
    curve = []
    for record in records:
        if "val/miou" not in record:
            continue
        reached = train.get(record["step"], record)
        curve.append({"step": record["step"], "minutes": (reached["time"] - t_start) / 60.0,
                      "train_loss": reached.get("train/loss", float("nan")), "val_miou": record["val/miou"]})
    last_train = max((r["time"] for r in records if "train/loss" in r), default=t_start)
    return curve, last_train - t_start


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _summary(framework: str, config, results: dict[str, Any], records, calibration, load_before) -> dict[str, Any]:
    keep = ("miou", "pixel_accuracy", "mean_accuracy", "iou", "accuracy", "class_names", "num_images", "seconds",
            "confusion_matrix", "step", "stop_reason", "train_seconds", "curve", "num_threads")
    out = {"framework": framework, **{k: results[k] for k in keep if k in results}}
    out["eval_seconds"] = out.pop("seconds", float("nan"))
    out.update(num_steps=int(config.train.num_steps), warmup_steps=int(config.optimizer.warmup_steps),
               eval_every=int(config.train.eval_every), batch_size=int(config.train.batch_size),
               crop_size=list(config.data.crop_size), images_per_second=median_images_per_second(records),
               calibration=calibration, load_average_before=load_before, load_average_after=_load())
    return out


def run_jax(config: ml_collections.ConfigDict, workdir: pathlib.Path, calibration=None) -> dict[str, Any]:
    """``train_and_evaluate`` in ``workdir`` (which must be fresh: the loop would resume a checkpoint)."""
    from bisenet_jax.train.loop import train_and_evaluate

    load_before, t_call = _load(), time.time()
    results = train_and_evaluate(config, workdir)
    records = read_metrics(pathlib.Path(workdir) / "metrics.jsonl")
    curve, train_seconds = jax_learning_curve(records, t_call)
    return _summary("jax", config, {**results, "curve": curve, "train_seconds": train_seconds}, records,
                    calibration, load_before)


def run_torch(config: ml_collections.ConfigDict, workdir: pathlib.Path, calibration=None, num_threads: int = 0,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    from bisenet_jax.benchmarks import torch_reference

    load_before = _load()
    results = torch_reference.train_and_evaluate(config, workdir, num_threads=num_threads, log=log)
    return _summary("torch", config, results, read_metrics(pathlib.Path(workdir) / "metrics.jsonl"), calibration,
                    load_before)


def _prepare_workdir(workdir: pathlib.Path, overwrite: bool) -> None:
    if workdir.exists() and any(workdir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"benchmark workdir {workdir} is not empty (a training workdir would resume, not "
                                  "start from scratch); pass a new --workdir or --overwrite to delete it")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)


def environment() -> dict[str, Any]:
    import jax

    env = {"cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
           "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
           "jax": jax.__version__, "jax_devices": [str(d) for d in jax.devices()]}
    try:
        import torch
        env["torch"] = torch.__version__
    except ImportError:
        pass
    return env


def run_benchmark(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, model: str = "",
                  budget_minutes: float = 30.0, sides: tuple[str, ...] = ("jax",), steps: str | int = "fit",
                  calibration_steps: int = 8, torch_threads: int = 0, overwrite: bool = False,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains each of ``sides`` ("jax", "torch") in turn under ``budget_minutes``; returns every figure.

    ``steps``: "fit" (calibrate each side, see the module doc), "config" (the config's num_steps)
    or an int. Writes ``workdir/{jax,torch}/`` and ``workdir/results.json``.
    """
    workdir = pathlib.Path(workdir).absolute()
    _prepare_workdir(workdir, overwrite)
    num_val = data_lib.num_examples(config.data, config.data.eval_split)
    result = {"benchmark": "camvid", "model": model or config.model.name, "model_name": config.model.name,
              "budget_minutes": budget_minutes, "steps": steps, "dataset_root": str(config.data.root),
              "num_val_images": num_val, "environment": environment(), "protocol": PROTOCOL}
    for side in sides:
        side_config, calibration = _side_config(config, side, budget_minutes, steps, calibration_steps,
                                                torch_threads, num_val, log)
        log(f"[{side}] {side_config.train.num_steps} steps (warmup {side_config.optimizer.warmup_steps}, "
            f"eval every {side_config.train.eval_every}), budget {budget_minutes} min, load {_load()}")
        if side == "jax":
            result["jax"] = run_jax(side_config, workdir / "jax", calibration)
        elif side == "torch":
            result["torch"] = run_torch(side_config, workdir / "torch", calibration, torch_threads, log)
        else:
            raise ValueError(f"unknown side {side!r}; expected 'jax' or 'torch'")
        save_json(result, workdir / "results.json")
    return result


def _side_config(config, side, budget_minutes, steps, calibration_steps, torch_threads, num_val, log):
    calibration = None
    if steps == "fit":
        log(f"[{side}] calibrating: {calibration_steps} train steps and a few val images (outside the budget) ...")
        if side == "jax":
            calibration = calibrate_jax(config, calibration_steps)
        else:
            from bisenet_jax.benchmarks import torch_reference
            calibration = torch_reference.calibrate(config, calibration_steps, num_threads=torch_threads)
        calibration["load_average"] = _load()
        log(f"[{side}] calibration: {calibration['step_seconds']:.2f} s/step ({calibration['cpu_step_seconds']:.2f} "
            f"CPU s/step), first step {calibration['startup_seconds']:.1f} s, eval "
            f"{calibration['eval_seconds_per_image']:.2f} s/image, load {calibration['load_average']}")
        side_config = scale_schedule(config, fit_num_steps(config, calibration, budget_minutes, num_val))
    elif steps == "config":
        side_config = config.copy_and_resolve_references()
    else:
        side_config = scale_schedule(config, int(steps))
    side_config.train.time_budget_minutes = budget_minutes
    return side_config, calibration


# ------------------------------------------------------------------------------------------------
# Output.


def save_json(result: dict[str, Any], path: pathlib.Path) -> pathlib.Path:
    from bisenet_jax.evaluation.evaluator import _nan_to_none

    path = pathlib.Path(path)
    path.write_text(json.dumps(_nan_to_none(result), indent=1, allow_nan=False, default=str) + "\n")
    return path


def _pct(value) -> str:
    return "     -" if value is None or value != value else f"{100 * value:6.2f}"


def format_report(result: dict[str, Any]) -> str:
    """mIoU, per-class IoU and the learning curve of every side, side by side where both ran."""
    sides = [s for s in ("jax", "torch") if s in result]
    titles = {"jax": "JAX (bisenet_jax)", "torch": "PyTorch reference"}
    env = result["environment"]
    lines = [f"CamVid val ({result['num_val_images']} images, ss at 480x360): {result['model_name']}, budget "
             f"{result['budget_minutes']} min, {env['cpus']} CPUs, jax {env['jax']}"
             + (f", torch {env['torch']}" if "torch" in env else ""), ""]
    width = 22
    lines.append(f"{'':<{width}}" + "".join(f"{titles[s]:>22}" for s in sides))

    def row(label, fn):
        lines.append(f"{label:<{width}}" + "".join(f"{fn(result[s]):>22}" for s in sides))

    row("val mIoU (%)", lambda r: _pct(r.get("miou")).strip())
    row("pixel accuracy (%)", lambda r: _pct(r.get("pixel_accuracy")).strip())
    row("steps done / planned", lambda r: f"{r['step']} / {r['num_steps']}")
    row("batch, crop", lambda r: f"{r['batch_size']}, {r['crop_size'][0]}x{r['crop_size'][1]}")
    row("train img/s (median)", lambda r: f"{r['images_per_second']:.2f}")
    row("budgeted minutes", lambda r: f"{r['train_seconds'] / 60:.1f}")
    row("final eval seconds", lambda r: f"{r['eval_seconds']:.1f}")
    row("load before / after", lambda r: f"{r['load_average_before'][0]:.1f} / {r['load_average_after'][0]:.1f}")
    row("stopped by", lambda r: "budget" if "budget" in r["stop_reason"] else r["stop_reason"])
    lines += ["", "per-class IoU (%)"]
    for i, name in enumerate(result[sides[0]]["class_names"]):
        row(f"  {name}", lambda r: _pct(r["iou"][i]).strip())
    for side in sides:
        lines += ["", f"learning curve, {titles[side]}", f"{'step':>7} {'minutes':>8} {'train loss':>11} {'val mIoU %':>11}"]
        for point in result[side]["curve"]:
            lines.append(f"{point['step']:>7} {point['minutes']:>8.1f} {point['train_loss']:>11.4f} "
                         f"{_pct(point['val_miou']):>11}")
    return "\n".join(lines)
