"""Train-step images/s and compile time of a model, side by side with the PyTorch reference.

  python scripts/benchmark_train.py --model bisenetv1_r18 --batch-size 8 --crop 256x320 --compare-torch

Random data; the protocol is in bisenet_jax/benchmarks/train_speed.py and printed with the numbers. With
--compare-torch the two sides are timed in alternating rounds (--alternate, default 6; 0 for one block each).
On a GPU it runs as it is: JAX on its default backend, PyTorch on CUDA beside it, --precision for both.
"""
from __future__ import annotations

import argparse
import json

from bisenet_jax import allocator

# --compare-torch's default: alternating rounds, since two blocks timed one after the other on a VM whose
# speed drifts can land in different stretches (single blocks of one model read 1.04x, 1.19x and 1.31x within
# ten minutes in session 55; docs/benchmarks.md, Training step speed). An even count gives each side the
# first place equally often.
DEFAULT_ROUNDS = 6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bisenetv1_r18")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", default="256x320", help="HEIGHTxWIDTH of the training crop")
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--compare-torch", action="store_true")
    parser.add_argument("--torch-compile", action="store_true",
                        help="also time the PyTorch step with the module under torch.compile (inductor, default "
                             "mode; a cold compile in a fresh inductor cache unless TORCHINDUCTOR_CACHE_DIR is set); "
                             "implies --compare-torch")
    parser.add_argument("--alternate", type=int, default=None, metavar="ROUNDS",
                        help="time JAX and PyTorch in ROUNDS alternating rounds of --steps steps each (JAX first "
                             "in even rounds; an even ROUNDS gives each side the first place equally often), after "
                             "--warmup untimed steps each, and print every round's ratio: on a VM whose speed drifts "
                             "this puts the two in nearly the same conditions; implies --compare-torch. Default: "
                             f"{DEFAULT_ROUNDS} with --compare-torch (not with --torch-compile), else 0; 0 times "
                             "each side in one block, JAX's then PyTorch's")
    parser.add_argument("--json", default="",
                        help="write the results there: with rounds (--compare-torch's default) an object with the "
                             "table's rows ('results'), every round's step times ('rounds') and the ratios "
                             "('summary'); with --alternate 0 or without --compare-torch a list of the rows")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.crop.lower().split("x"))
    if args.alternate is None:
        args.alternate = DEFAULT_ROUNDS if args.compare_torch and not args.torch_compile else 0
    if args.alternate < 0:
        parser.error(f"--alternate {args.alternate}: ROUNDS must be >= 0 (0 times each side once, in one block)")
    if args.alternate and args.torch_compile:
        parser.error("--alternate does not combine with --torch-compile (time inductor without --alternate)")
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps {args.steps} --warmup {args.warmup}: expected --steps >= 1 and --warmup >= 0")
    args.compare_torch = args.compare_torch or args.torch_compile or bool(args.alternate)

    from bisenet_jax.benchmarks import machine, train_speed

    timing = (f"{args.warmup} warm-up steps each, then {args.alternate} rounds of {args.steps} timed steps per "
              f"side, JAX first in even rounds and PyTorch first in odd ones, median" if args.alternate else
              f"{args.warmup} warm-up + {args.steps} timed steps, median")
    print(f"protocol: full train step (aux heads, OHEM on every head, backward, SGD), random data, "
          f"batch {args.batch_size}, crop {height}x{width}, {timing}; {machine.cpu_count()} CPUs available "
          f"({machine.cpu_name()}); load {machine.load_average()}" + train_speed.device_protocol(args.compare_torch))
    if args.alternate:
        return _alternating(args, height, width)
    results = [train_speed.jax_train_speed(args.model, args.batch_size, height, width, num_classes=args.num_classes,
                                           dtype=args.precision, warmup=args.warmup, steps=args.steps)]
    print(results[0]["xla_options"])
    print(allocator.describe() + ("; the PyTorch step runs in this process too" if args.compare_torch else ""))
    if args.compare_torch:
        results.append(train_speed.torch_train_speed(args.model, args.batch_size, height, width,
                                                     num_classes=args.num_classes, warmup=args.warmup,
                                                     steps=args.steps, precision=train_speed.torch_precision(
                                                         args.precision, machine.torch_device())))
    if args.torch_compile:
        from bisenet_jax.benchmarks import torch_reference

        with torch_reference.fresh_inductor_cache() as cache:
            print(f"torch-compile: the eager PyTorch step with torch.compile(module, dynamic=False) (inductor, "
                  f"default mode): forward compiled, backward from AOTAutograd, OHEM loss and SGD eager; compile s "
                  f"= first call - median step; {cache}", flush=True)
            results.append(train_speed.torch_compile_train_speed(args.model, args.batch_size, height, width,
                                                                 num_classes=args.num_classes, warmup=args.warmup,
                                                                 steps=args.steps, device=machine.torch_device()))
    print(f"{'framework':<14}{'precision':<10}{'step s (median)':>16}{'min':>8}{'max':>8}{'images/s':>10}"
          f"{'compile s':>11}{'peak RSS MB':>13}")
    for r in results:
        if r.get("error"):
            print(f"{r['framework']:<14}{r['precision']:<10}  failed: {r['error']}")
            continue
        print(f"{r['framework']:<14}{r['precision']:<10}{r['step_seconds_median']:>16.3f}{r['step_seconds_min']:>8.3f}"
              f"{r['step_seconds_max']:>8.3f}{r['images_per_second']:>10.2f}{r['compile_seconds']:>11.1f}"
              f"{r['peak_rss_mb']:>13.0f}")
    for r in results[1:]:
        if "first_call_seconds" in r and not r.get("error"):
            print(f"{r['framework']}: first call {r['first_call_seconds']:.1f} s (compile + one step)")
    if len(results) >= 2:
        print(f"JAX / PyTorch images/s: " + ", ".join(
            f"{results[0]['images_per_second'] / r['images_per_second']:.2f}x vs {r['framework']}"
            for r in results[1:] if not r.get("error")) + f" (load after: {machine.load_average()})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def _alternating(args, height: int, width: int) -> int:
    from bisenet_jax.benchmarks import machine, train_speed

    out = train_speed.alternating_train_speed(args.model, args.batch_size, height, width,
                                              num_classes=args.num_classes, dtype=args.precision,
                                              warmup=args.warmup, steps=args.steps, rounds=args.alternate)
    jax_row, torch_row = out["results"]
    print(jax_row["xla_options"])
    print(allocator.describe() + "; the PyTorch step runs in this process too")
    rounds, summary = out["rounds"], out["summary"]
    print(f"per round, the median step of each side:\n{'round':>5}  {'first':<6}{'JAX s':>8}{'PyTorch s':>11}"
          f"{'JAX / PyTorch images/s':>25}")
    for r, order in enumerate(rounds["orders"]):
        print(f"{r:>5}  {order[0]:<6}{rounds['round_medians']['jax'][r]:>8.3f}"
              f"{rounds['round_medians']['torch'][r]:>11.3f}{summary['ratio_each_round'][r]:>24.2f}x")
    print(f"{'framework':<14}{'precision':<10}{'step s (median)':>16}{'min':>8}{'max':>8}{'images/s':>10}"
          f"{'compile s':>11}{'slowest / fastest round':>25}")
    for row in (jax_row, torch_row):
        print(f"{row['framework']:<14}{row['precision']:<10}{row['step_seconds_median']:>16.3f}"
              f"{row['step_seconds_min']:>8.3f}{row['step_seconds_max']:>8.3f}{row['images_per_second']:>10.2f}"
              f"{row['compile_seconds']:>11.1f}{summary['spread'][row['framework']]:>24.2f}x")
    print(f"JAX / PyTorch images/s: {summary['ratio']:.2f}x over all timed steps; per round median "
          f"{summary['ratio_round_median']:.2f}x, {summary['ratio_round_min']:.2f}-{summary['ratio_round_max']:.2f}x "
          f"(load after: {machine.load_average()}; peak RSS {torch_row['peak_rss_mb']:.0f} MB, both sides)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    allocator.enable()  # before any output: may re-execute this command once
    raise SystemExit(main())
