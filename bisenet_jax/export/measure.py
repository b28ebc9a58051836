r"""mIoU and CPU latency of exported models, side by side (e.g. fp32 against int8).

    python -m bisenet_jax.export.measure demo.onnx demo_int8.onnx --checkpoint runs/demo \
        --split val --latency 512x1024 1024x2048

mIoU goes through the library evaluator (``bisenet_jax.evaluation.evaluator.evaluate``, whole
image, one confusion matrix per split) with each exported model in place of the Flax module, on the
dataset recorded in the file (``--data-root`` for datasets that live in a folder); ``--checkpoint``
adds the JAX model itself as a row. Latency is the median wall time of ``--runs`` forward passes of
one random (1, 3, H, W) image after ``--warmup`` passes, on ``--threads`` CPU threads (XLA uses
its own pool for StableHLO); the machine's load average is printed with it (the figures mean little
on a busy machine).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Sequence

import numpy as np

from bisenet_jax.export.metadata import ExportError
from bisenet_jax.export.quantize import data_config_for
from bisenet_jax.export.runtime import ExportedModel, load_exported


def miou(model: Any, variables: Any, num_classes: int, data_config: Any, split: str) -> float:
    """Single-scale whole-image mIoU of ``model`` (a Flax module or an ExportedModel) on ``split``."""
    from bisenet_jax.data import create_eval_dataset, get_dataset_info
    from bisenet_jax.evaluation.evaluator import evaluate

    info = get_dataset_info(data_config)
    batches = create_eval_dataset(data_config, split, batch_size=1)
    return float(evaluate(model, variables, batches, num_classes, info.ignore_label, progress=False)["miou"])


def latency_ms(model: ExportedModel, height: int, width: int, runs: int = 10, warmup: int = 2) -> float:
    """Median milliseconds of one forward pass of a (1, H, W, 3) random image."""
    image = np.random.default_rng(0).standard_normal((1, height, width, 3)).astype(np.float32)
    for _ in range(warmup):
        model.logits(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.logits(image)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(s) for s in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 512x1024, got {text!r}") from None
    return height, width


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="exported .onnx / .tflite / .stablehlo files")
    parser.add_argument("--checkpoint", default=None, help="also evaluate this JAX checkpoint (mIoU only)")
    parser.add_argument("--split", default="val", help="split for mIoU; '' skips mIoU")
    parser.add_argument("--data-root", default=None, help="dataset folder (datasets that are not generated)")
    parser.add_argument("--latency", nargs="*", type=_size, default=[], metavar="HxW", help="latency sizes")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="onnxruntime / LiteRT CPU threads")
    args = parser.parse_args(argv)
    try:
        models = [load_exported(path, threads=args.threads) for path in args.models]
    except (ExportError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    dataset = models[0].info.dataset
    if args.split:
        if not dataset:
            print(f"error: {args.models[0]} records no dataset; mIoU needs one", file=sys.stderr)
            return 2
        config = data_config_for(dataset, args.data_root)
        rows = []
        if args.checkpoint:
            from bisenet_jax.checkpoints import load_model
            from bisenet_jax.models import create_model
            variables, info = load_model(args.checkpoint)
            flax_model = create_model(info["model_name"], int(info["num_classes"]), aux_heads=False)
            rows.append((f"JAX {args.checkpoint}", miou(flax_model, variables, int(info["num_classes"]), config,
                                                        args.split)))
        for path, model in zip(args.models, models):
            rows.append((path, miou(model, {}, model.info.num_classes, config, args.split)))
        print(f"mIoU on {dataset} {args.split} (ss, whole images):")
        for name, value in rows:
            print(f"  {100 * value:6.2f}  {name}")
    if args.latency:
        print(f"latency, median of {args.runs} runs after {args.warmup} warm-up, batch 1, "
              f"{args.threads} threads on {os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}:")
        for height, width in args.latency:
            for path, model in zip(args.models, models):
                print(f"  {height}x{width}  {latency_ms(model, height, width, args.runs, args.warmup):9.1f} ms  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
