"""Parameters and GFLOPs of every BiSeNet model at a given resolution, next to the paper's figures.

    python scripts/model_stats.py                      # 640x360, the resolution of the paper's table
    python scripts/model_stats.py --height 1024 --width 2048 --models bisenetv1_r18 bisenetv2
    python scripts/model_stats.py --summary bisenetv1_x39   # per-module table of one model

FLOPs come from XLA's cost analysis of the compiled eval forward pass (batch 1), where a
multiply-add counts as 2 FLOPs; papers usually quote multiply-adds, so compare them with GMACs.
"""
from __future__ import annotations

import argparse
import re

from bisenet_jax.models import list_models
from bisenet_jax.models.summary import format_stats_table, model_stats, model_summary

NOTES = """\
GFLOPs: XLA's cost analysis of the compiled eval forward (batch 1, auxiliary heads not run);
a multiply-add counts 2 FLOPs and element-wise work is included. GMACs = GFLOPs / 2 is the unit
papers call "FLOPs". Paper figures: BiSeNetV1 speed table at 640x360 (approx.). Its R18 row is
the paper's own ResNet-18 model, not the widely used PyTorch layout we follow. Its X39 "5.8 M"
is not what the published X39 structure gives (ours: 1.48 M parameters without auxiliary heads;
users of the authors' code count about 1.5 M); it is close to that model's float32 size in MB
(1.48 M x 4 B = 5.9 MB)."""


def _natural(name: str) -> list:
    """Sort key that puts r18 before r101."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--models", nargs="+", default=sorted(list_models(), key=_natural), choices=list_models(), metavar="NAME",
                        help=f"models to measure (default: all of {', '.join(list_models())})")
    parser.add_argument("--summary", choices=list_models(), metavar="NAME",
                        help="print the per-module table of one model instead")
    args = parser.parse_args(argv)
    if args.summary:
        print(model_summary(args.summary, args.num_classes, (1, args.height, args.width, 3)))
        return
    rows = model_stats(args.models, args.height, args.width, args.num_classes)
    print(format_stats_table(rows, args.height, args.width))
    print()
    print(NOTES)


if __name__ == "__main__":
    main()
