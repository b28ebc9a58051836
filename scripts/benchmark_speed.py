"""Inference latency / FPS, parameters and GFLOPs of BiSeNet models, with the protocol printed.

  python scripts/benchmark_speed.py --model bisenetv1_r18 --resolutions 1024x2048 512x1024
  python scripts/benchmark_speed.py --model bisenetv1_r18 --resolutions 1024x2048 --compare-torch
  python scripts/benchmark_speed.py --model bisenetv2 --precisions float32 bfloat16 --batch-sizes 1 4

Weights are random (speed does not depend on them). With --compare-torch the PyTorch reference
module runs in the same process under the same protocol, and the JAX speed-up is printed. The
protocol is in bisenet_jax/benchmarks/inference_speed.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from bisenet_jax import allocator


def _resolution(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must be HEIGHTxWIDTH, e.g. 1024x2048, got {text!r}") from None
    return height, width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", nargs="+", default=["bisenetv1_r18"], help="model name(s), e.g. bisenetv1_r18 bisenetv2")
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--resolutions", nargs="+", type=_resolution, default=[(1024, 2048)], help="HxW, e.g. 1024x2048")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1])
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations (default 3)")
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations (default 20)")
    parser.add_argument("--compare-torch", action="store_true", help="also time the PyTorch reference module")
    parser.add_argument("--torch-compile", action="store_true",
                        help="also time the PyTorch module under torch.compile (inductor, default mode; a cold "
                             "compile in a fresh inductor cache unless TORCHINDUCTOR_CACHE_DIR is set); implies "
                             "--compare-torch")
    parser.add_argument("--threads", type=int, default=0,
                        help="restrict this process (JAX and PyTorch) to the first N CPUs (default: all available)")
    parser.add_argument("--quiet-percent", type=float, default=None,
                        help="shared machines: keep only iterations during which other processes used at most this "
                             "percentage of the CPUs (e.g. 5)")
    parser.add_argument("--max-rounds", type=int, default=None,
                        help="with --quiet-percent: give up after this many timed iterations (default 6 x --iterations)")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    if args.threads:  # before JAX starts: XLA sizes its thread pool from the CPU affinity
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
    import contextlib
    import dataclasses

    from bisenet_jax.benchmarks import inference_speed, machine

    env = machine.environment()
    with contextlib.ExitStack() as stack:
        cache = ""
        if args.torch_compile:
            from bisenet_jax.benchmarks import torch_reference

            cache = stack.enter_context(torch_reference.fresh_inductor_cache())
        print(inference_speed.format_protocol(env, args.warmup, args.iterations, args.quiet_percent, cache),
              flush=True)
        results = []
        for name in args.model:
            results += inference_speed.benchmark(name, args.num_classes, args.resolutions, args.batch_sizes,
                                                 args.precisions, warmup=args.warmup, iterations=args.iterations,
                                                 compare_torch=args.compare_torch, quiet_percent=args.quiet_percent,
                                                 max_rounds=args.max_rounds, torch_compile=args.torch_compile,
                                                 progress=lambda text: print(text, flush=True))
    print()
    print(inference_speed.format_results(results))
    load = machine.load_average()
    print(f"load average at end: {load}")
    if args.json:
        payload = {"environment": env, "load_average_end": load, "warmup": args.warmup, "iterations": args.iterations,
                   "quiet_percent": args.quiet_percent, "results": [dataclasses.asdict(r) for r in results]}
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1, default=str)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    allocator.enable()  # before any output: may re-execute this command once
    sys.exit(main())
