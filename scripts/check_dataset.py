"""Checks a dataset before training: image counts, sizes, class histogram, undefined ids, bad files.

  python scripts/check_dataset.py --name camvid --root ../shared/data/camvid
  python scripts/check_dataset.py --name custom --root /data/mine --set custom.num_classes=3 \
      --set custom.label_map=0:255,1:0,2:1,3:2 --splits train,val

Exit status: 0 when no problem was found, 1 when some was (the report says which), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import ast
import sys

from bisenet_jax.data import default_data_config, known_datasets
from bisenet_jax.data.check import check_dataset


def _override(config, dotted_key: str, text: str) -> None:
    """config.<dotted_key> = text, converted to the type of the current value."""
    *parents, key = dotted_key.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    current = node.get(key) if key in node else None
    if isinstance(current, bool):
        value = text.strip().lower() in ("1", "true", "yes")
    elif isinstance(current, str):
        value = text
    else:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
    node[key] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help=", ".join(known_datasets()))
    parser.add_argument("--root", default="", help="dataset folder in its official layout")
    parser.add_argument("--splits", default="train,val", help="comma-separated splits (default: train,val)")
    parser.add_argument("--max_images", type=int, default=None, help="check only the first N records of each split")
    parser.add_argument("--threads", type=int, default=None, help="decoding threads (default: cores, at most 8)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="other data config fields, e.g. custom.num_classes=3"
    )
    args = parser.parse_args(argv)

    config = default_data_config()
    config.name, config.root = args.name, args.root
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        try:
            _override(config, key, value)
        except (KeyError, TypeError, ValueError) as error:
            parser.error(f"--set {item}: {error}")
    report = check_dataset(config, [s for s in args.splits.split(",") if s], args.max_images, args.threads)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
