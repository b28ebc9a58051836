"""Two trainings step by step from one start: JAX against the PyTorch reference, beside PyTorch against itself.

  python scripts/compare_trajectories.py --recipe v2 --root /data/camvid --steps 30

Tells a fault in the train step (a gap from the first step, far beyond the control's) from float32
rounding growing through training (the control: the reference again with another thread count).
`--float64-truth` adds the reference in float64; `--dropout-draws K` instead compares the first step with
dropout on, K draws per side. The protocols are in bisenet_jax/benchmarks/divergence.py.
"""
from __future__ import annotations

import argparse
import json
import sys

from bisenet_jax import allocator


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="v2", help="a CamVid CPU recipe: v1_r18, v1_x39 or v2")
    parser.add_argument("--root", required=True, help="the CamVid folder (SegNet layout)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--report-every", type=int, default=1)
    parser.add_argument("--init-checkpoint", default="",
                        help="start from these PyTorch-layout weights (e.g. a race's <workdir>/init.pth); default: "
                             "the reference's initialisation with the recipe's seed")
    parser.add_argument("--seed", type=int, default=None, help="the recipe's train.seed (initialisation, batches)")
    parser.add_argument("--torch-threads", type=int, default=0, help="the reference's threads (default: every CPU)")
    parser.add_argument("--control-threads", type=int, default=1, help="the control's threads (must differ)")
    parser.add_argument("--float64-truth", action="store_true",
                        help="also run the reference in float64 and report each float32 run's distance from it")
    parser.add_argument("--dropout-draws", type=int, default=0,
                        help="instead of the trajectories: the first step with dropout on (V2), this many draws per "
                             "side, and whether the two sides' mean updates agree (divergence.compare_dropout)")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)

    from bisenet_jax.benchmarks import divergence, recipes

    config = recipes.camvid_cpu_recipe(args.recipe, args.root)
    if args.seed is not None:
        config.train.seed = args.seed
    if args.dropout_draws:
        print(f"protocol: bisenet_jax/benchmarks/divergence.py (compare_dropout); recipe {args.recipe}, dropout on, "
              f"first step, {args.dropout_draws} draws per side; gaps and spreads in units of PyTorch's mean update")
        result = divergence.compare_dropout(config, args.dropout_draws, init_checkpoint=args.init_checkpoint,
                                            torch_threads=args.torch_threads)
    else:
        print(f"protocol: bisenet_jax/benchmarks/divergence.py; recipe {args.recipe} ({config.model.name}, batch "
              f"{config.train.batch_size}, crop {config.data.crop_size[0]}x{config.data.crop_size[1]}), dropout off, "
              f"{args.steps} steps; distance = ||run - torch|| / ||torch - start|| over the weight tensors")
        result = divergence.compare_trajectories(config, args.steps, init_checkpoint=args.init_checkpoint,
                                                 torch_threads=args.torch_threads,
                                                 control_threads=args.control_threads,
                                                 report_every=args.report_every, float64_truth=args.float64_truth)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    allocator.enable()  # before any output: may re-execute this command once
    sys.exit(main())
