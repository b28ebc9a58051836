"""CamVid time-to-accuracy: train BiSeNet for a wall-clock budget, evaluate on val, optionally against PyTorch.

  python scripts/benchmark_camvid.py --model v1_r18 --root /data/camvid --compare-torch
  export BISENET_CAMVID_ROOT=/data/camvid  # instead of --root
  python scripts/benchmark_camvid.py --model v2 --budget-minutes 30 --workdir runs/camvid_bench_v2
  python scripts/benchmark_camvid.py --model v1_r18 --set optimizer.lr=0.01 --workdir runs/r18_lr0.01  # tuning
  python scripts/benchmark_camvid.py --model v2 --seeds 3  # mean, std, min and max of val mIoU over 3 seeds
  python scripts/benchmark_camvid.py --model v1_r18 --compare-torch --same-init --schedule-clock time  # like for like

Trains the model's CPU recipe (bisenet_jax/benchmarks/recipes.py, what configs/camvid_<model>_cpu.py
return) from scratch on the train split for --budget-minutes (the schedule fitted to the budget after
a short calibration; with --schedule-clock time the learning rate follows the elapsed fraction of the
budget instead, on both sides), saving the weights at 4 points of the schedule; after the budget, evaluates
them on val (single scale, 480x360) and prints the mIoU, the per-class IoU and the learning curve.
--compare-torch then does the same with the PyTorch reference module in a plain PyTorch loop (same
batches, loss, optimiser, schedule and budget), after the JAX run (before it with --torch-first), and prints
both side by side.
Everything is also written to <workdir>/results.json. The protocol is in bisenet_jax/benchmarks/camvid.py.
Run it on an otherwise idle machine: the CPU share other processes took during each run is recorded,
and the report warns when it was high.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

from bisenet_jax import allocator


def _steps(text: str) -> str | int:
    if text in ("fit", "config"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps must be 'fit', 'config' or a number of steps, got {text!r}") \
            from None


def main(argv: list[str] | None = None) -> int:
    from bisenet_jax.benchmarks import camvid
    from bisenet_jax.benchmarks.recipes import CAMVID_CPU_MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(CAMVID_CPU_MODELS), default="v1_r18")
    parser.add_argument("--budget-minutes", type=float, default=30.0, help="wall-clock training budget (default 30)")
    parser.add_argument("--root", default=os.environ.get("BISENET_CAMVID_ROOT"),
                        required="BISENET_CAMVID_ROOT" not in os.environ,
                        help="CamVid (SegNet release) folder with train/ trainannot/ val/ valannot/ "
                             "(default: $BISENET_CAMVID_ROOT)")
    parser.add_argument("--workdir", default="", help="output folder (default runs/benchmark_camvid/<model>)")
    parser.add_argument("--compare-torch", action="store_true", help="then run the PyTorch reference the same way")
    parser.add_argument("--torch-only", action="store_true", help="run the PyTorch reference only")
    parser.add_argument("--torch-first", action="store_true",
                        help="with --compare-torch: run the PyTorch side first, then JAX (default: JAX first)")
    parser.add_argument("--steps", type=_steps, default="fit",
                        help="'fit' (default): fit num_steps to the budget from a short calibration of each side; "
                             "'config': the config's num_steps; or a number")
    parser.add_argument("--calibration-steps", type=int, default=camvid.CALIBRATION_STEPS,
                        help="timed steps of the calibration, a short run of each side's training loop: the median "
                             f"window of {camvid.CALIBRATION_WINDOW} steps after {camvid.CALIBRATION_WARMUP_STEPS} "
                             "warm-up steps (the first compiles)")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (default: all CPUs)")
    parser.add_argument("--config", default="", help="a config file to train instead of the model's CPU recipe")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set optimizer.lr=0.02 (repeatable; for tuning on val)")
    parser.add_argument("--same-init", action="store_true",
                        help="both sides start from the same weights: the PyTorch reference's initialisation with the "
                             "recipe's seed, saved as <workdir>/init.pth and set as train.init_checkpoint on both "
                             "sides (the initialisation's draw then leaves the difference between them; V2's dropout masks "
                             "still differ)")
    parser.add_argument("--schedule-clock", choices=("steps", "time"), default="steps",
                        help="'steps' (default): each side's learning rate follows its step count, fitted to the "
                             "budget by the calibration; 'time': it follows the elapsed fraction of the budget on "
                             "both sides, so each schedule ends with the budget whatever the calibration predicted")
    parser.add_argument("--overwrite", action="store_true", help="delete a non-empty --workdir first")
    parser.add_argument("--seeds", type=int, default=0,
                        help="run the benchmark with seeds 0..N-1 (workdir/seed_<s>) and report the mean, std, min "
                             "and max of val mIoU per side (default: one run with the recipe's seed)")
    args = parser.parse_args(argv)

    try:
        sides = camvid.race_sides(args.compare_torch, args.torch_only, args.torch_first)
    except ValueError as error:
        parser.error(str(error))
    config = camvid.load_config(args.model, args.root, args.config or None)
    camvid.apply_overrides(config, args.set)
    workdir = args.workdir or f"runs/benchmark_camvid/{args.model}"
    options = dict(model=args.model, budget_minutes=args.budget_minutes, sides=sides, steps=args.steps,
                   calibration_steps=args.calibration_steps, torch_threads=args.torch_threads,
                   overwrite=args.overwrite, same_init=args.same_init, schedule_clock=args.schedule_clock)
    if args.seeds:
        result = camvid.run_seeds(config, workdir, list(range(args.seeds)), **options)
        print()
        print(camvid.format_seed_spread(result["spread"]))
        print(f"\nwrote {pathlib.Path(workdir).absolute() / 'seeds.json'}")
        return 0
    result = camvid.run_benchmark(config, workdir, **options)
    print()
    print(camvid.format_report(result))
    print(f"\nwrote {pathlib.Path(workdir).absolute() / 'results.json'}")
    return 0


if __name__ == "__main__":
    allocator.enable()  # before any output: may re-execute this command once
    sys.exit(main())
