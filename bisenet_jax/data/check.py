"""Dataset checks before training: counts, sizes, class histogram, undefined label ids, bad files.

`check_dataset(data_config, splits)` reads every record of each split through the same source the
training uses and returns a `DatasetReport`; `report.format()` is what `scripts/check_dataset.py`
prints, and `report.ok` is False when anything would break or silently bias training: a split that
cannot be opened (missing folders or labels, empty), unreadable files, label / image size
mismatches, or label ids outside the classes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bisenet_jax.data.info import DatasetInfo
from bisenet_jax.data.reader import inspect_record
from bisenet_jax.data.registry import create_source, get_dataset_info

_MAX_LISTED = 20  # Problem files listed per kind in the text report (all are kept in the report).


@dataclasses.dataclass
class SplitReport:
    """What one split holds. class_pixels: (num_classes,) train-id pixel counts."""

    split: str
    num_records: int = 0
    num_checked: int = 0
    sizes: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # (W, H) -> images
    class_pixels: np.ndarray | None = None
    class_images: np.ndarray | None = None  # (num_classes,) images containing each class
    ignore_pixels: int = 0
    invalid_ids: dict[int, int] = dataclasses.field(default_factory=dict)  # raw id -> pixels
    invalid_files: list[tuple[str, dict[int, int]]] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)  # unreadable files, size mismatches
    open_error: str | None = None  # the split could not be opened at all

    @property
    def ok(self) -> bool:
        return self.open_error is None and not self.errors and not self.invalid_ids


@dataclasses.dataclass
class DatasetReport:
    name: str
    info: DatasetInfo | None
    splits: list[SplitReport]
    info_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.info_error is None and all(split.ok for split in self.splits)

    def format(self) -> str:
        """The human-readable report."""
        lines = [f"dataset {self.name}"]
        if self.info_error:
            return "\n".join(lines + [f"  ERROR: {self.info_error}", "RESULT: problems found"])
        info = self.info
        lines[0] += f": {info.num_classes} classes, ignore label {info.ignore_label}"
        for split in self.splits:
            lines += _format_split(split, info)
        lines.append("RESULT: ok" if self.ok else "RESULT: problems found")
        return "\n".join(lines)


def _format_split(split: SplitReport, info: DatasetInfo) -> list[str]:
    lines = [f"split {split.split}:"]
    if split.open_error:
        return lines + ["  ERROR: cannot open the split:"] + [f"    {line}" for line in split.open_error.splitlines()]
    checked = "" if split.num_checked == split.num_records else f" ({split.num_checked} checked)"
    lines.append(f"  records: {split.num_records}{checked}")
    sizes = ", ".join(f"{w}x{h}: {n}" for (w, h), n in split.sizes.most_common(5))
    more = f", ... {len(split.sizes) - 5} more sizes" if len(split.sizes) > 5 else ""
    lines.append(f"  sizes (WxH: images): {sizes}{more}")
    if split.class_pixels is not None:
        total = int(split.class_pixels.sum()) + split.ignore_pixels
        lines.append("  class histogram (train id, name, pixels, share, images):")
        for class_id, name in enumerate(info.class_names):
            pixels = int(split.class_pixels[class_id])
            flag = "   <- never seen" if pixels == 0 else ""
            lines.append(
                f"    {class_id:3d} {name:<24s} {pixels:13d} {100 * pixels / max(total, 1):6.2f}% "
                f"{int(split.class_images[class_id]):7d}{flag}"
            )
        lines.append(
            f"    ign {'(ignore ' + str(info.ignore_label) + ')':<24s} {split.ignore_pixels:13d} "
            f"{100 * split.ignore_pixels / max(total, 1):6.2f}%"
        )
    if split.invalid_ids:
        ids = ", ".join(f"{raw_id}: {pixels} px" for raw_id, pixels in sorted(split.invalid_ids.items()))
        lines.append(
            f"  ERROR: label ids outside the classes and not ignore in {len(split.invalid_files)} files "
            f"({ids}); training maps them to ignore (strict mode: error). Files:"
        )
        for where, ids in split.invalid_files[:_MAX_LISTED]:
            lines.append(f"    {where}: {', '.join(str(i) for i in sorted(ids))}")
        if len(split.invalid_files) > _MAX_LISTED:
            lines.append(f"    ... and {len(split.invalid_files) - _MAX_LISTED} more")
    if split.errors:
        lines.append(f"  ERROR: {len(split.errors)} records cannot be used:")
        lines += [f"    {error}" for error in split.errors[:_MAX_LISTED]]
        if len(split.errors) > _MAX_LISTED:
            lines.append(f"    ... and {len(split.errors) - _MAX_LISTED} more")
    return lines


def check_dataset(
    data_config: Any,
    splits: Sequence[str] = ("train", "val"),
    max_records: int | None = None,
    num_threads: int | None = None,
) -> DatasetReport:
    """Reads (up to max_records of) each split with the training's own source and reports on it."""
    name = str(getattr(data_config, "name", ""))
    try:
        info = get_dataset_info(data_config)
    except (KeyError, ValueError, OSError) as error:
        return DatasetReport(name, None, [], info_error=_message(error))
    reports = [_check_split(data_config, split, info, max_records, num_threads) for split in splits]
    return DatasetReport(name, info, reports)


def _check_split(
    data_config: Any, split: str, info: DatasetInfo, max_records: int | None, num_threads: int | None
) -> SplitReport:
    report = SplitReport(split)
    try:
        source = create_source(data_config, split)
    except (KeyError, ValueError, OSError, ImportError) as error:
        report.open_error = _message(error)
        return report
    report.num_records = len(source)
    count = report.num_records if max_records is None else min(max_records, report.num_records)
    report.class_pixels = np.zeros(info.num_classes, np.int64)
    report.class_images = np.zeros(info.num_classes, np.int64)
    threads = num_threads or min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:  # PIL decodes without the GIL.
        for result in pool.map(lambda index: _check_record(source, index, info), range(count)):
            _add(report, result, info)
    report.num_checked = count
    return report


def _check_record(source: Any, index: int, info: DatasetInfo) -> dict:
    """Histogram, size and problems of one record (exceptions become the record's error)."""
    where = source._where(index) if hasattr(source, "_where") else f"record {index}"
    try:
        record, invalid = inspect_record(source, index, info)
    except (OSError, ValueError) as error:
        return {"error": _message(error)}
    label = record["label"]
    counts = np.bincount(label.reshape(-1), minlength=256)
    return {
        "where": where,
        "size": (label.shape[1], label.shape[0]),
        "class_pixels": counts[: info.num_classes],
        "ignore_pixels": int(counts[info.ignore_label]),
        "invalid": invalid,
    }


def _add(report: SplitReport, result: dict, info: DatasetInfo) -> None:
    if "error" in result:
        report.errors.append(result["error"])
        return
    report.sizes[result["size"]] += 1
    report.class_pixels += result["class_pixels"]
    report.class_images += result["class_pixels"] > 0
    report.ignore_pixels += result["ignore_pixels"]
    # Undefined raw ids were mapped to ignore in the histogram above; they are also listed here.
    if result["invalid"]:
        report.invalid_files.append((result["where"], result["invalid"]))
        for raw_id, pixels in result["invalid"].items():
            report.invalid_ids[raw_id] = report.invalid_ids.get(raw_id, 0) + pixels


def _message(error: BaseException) -> str:
    return f"{type(error).__name__}: {error.args[0] if len(error.args) == 1 else error}"
