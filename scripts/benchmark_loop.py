"""Does the input pipeline keep up? The training loop's images/s beside the bare train step's.

  python scripts/benchmark_loop.py --recipe v1_r18 --root ../shared/data/camvid --steps 20

Runs, in this process and one after the other, the recipe's train step on a random batch, its
training iterator alone, and ``train_and_evaluate`` for the same number of steps; the protocol is in
bisenet_jax/benchmarks/loop_speed.py.
"""
from __future__ import annotations

import argparse
import json
import sys

from bisenet_jax import allocator


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="v1_r18", help="a CamVid CPU recipe: v1_r18, v1_x39 or v2")
    parser.add_argument("--root", required=True, help="the CamVid folder (SegNet layout)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps; the recipes cache decoded records (data.cache_gb), so a warm-up of an "
                             "epoch (50 for CamVid's 367 images) times the steady state of a long run")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set data.cache_gb=0 (repeatable)")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)

    import os

    from bisenet_jax.benchmarks import camvid, loop_speed, recipes

    config = recipes.camvid_cpu_recipe(args.recipe, args.root)
    camvid.apply_overrides(config, args.set)
    result = loop_speed.compare(config, warmup=args.warmup, steps=args.steps)
    env = result["environment"]
    print(f"protocol: bisenet_jax/benchmarks/loop_speed.py; recipe {args.recipe} ({result['model']}, batch "
          f"{result['batch_size']}, crop {result['crop'][0]}x{result['crop'][1]}, data threads "
          f"{result['data_threads']}, workers {result['data_workers']}, cache_gb {result['cache_gb']}); "
          f"{args.warmup} warm-up + {args.steps} steps; "
          f"{env['cpus']} CPUs ({env['cpu']}); XLA_FLAGS {os.environ.get('XLA_FLAGS', '') or '(none)'}; "
          f"load before {env['load_average']}")
    step, data, loop = result["step"], result["data"], result["loop"]
    print(f"train step alone : {step['images_per_second']:6.2f} images/s ({step['step_seconds_median']:.3f} s/step)")
    print(f"input pipeline   : {data['images_per_second']:6.2f} images/s alone, {data['cpu_seconds_per_batch']:.2f} CPU s "
          f"per batch ({data['wall_seconds_per_batch']:.2f} s wall)")
    print(f"training loop    : {loop['images_per_second']:6.2f} images/s (median of the logged windows after warm-up)")
    print(f"loop / step      : {result['loop_over_step']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    allocator.enable()  # before any output: may re-execute this command once
    sys.exit(main())
