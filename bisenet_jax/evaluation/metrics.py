"""Segmentation metrics from one confusion matrix per split.

The confusion matrix is ``confusion[gt, pred]`` = number of labelled pixels of class ``gt``
predicted as ``pred``; pixels whose label is the ignore label (or any value outside
``0..num_classes-1``) are not counted. It is accumulated over the whole split (per batch on the
device in int32, over batches on the host in int64, then summed once across hosts), and every
metric is computed from it at the end, never averaged over images.

IoU is exact: ``TP / (TP + FP + FN)``, no ``+1`` in the denominator. mIoU is the mean over the
classes that occur in the ground truth or in the prediction; a class absent from both has no IoU
(NaN in memory, ``null`` in JSON) and does not count.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils


def confusion_matrix(labels: jax.Array, predictions: jax.Array, num_classes: int) -> jax.Array:
    """(num_classes, num_classes) int32 counts ``[gt, pred]`` of one batch; jit-able.

    ``labels`` and ``predictions`` are integer arrays of the same shape. Label values outside
    ``0..num_classes-1`` (the ignore label) are skipped; predictions must be class ids. A
    bincount over ``gt * C + pred`` (one scatter-add), so memory does not grow with C like a
    one-hot product would (171 classes at 1024x2048 would need gigabytes).
    """
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} must have the same shape")
    labels = labels.reshape(-1).astype(jnp.int32)
    predictions = predictions.reshape(-1).astype(jnp.int32)
    valid = (labels >= 0) & (labels < num_classes)
    index = jnp.where(valid, labels * num_classes + predictions, 0)
    counts = jnp.bincount(index, weights=valid.astype(jnp.int32), length=num_classes * num_classes)
    return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def to_host(confusion: Any) -> np.ndarray:
    """A confusion matrix (numpy, or a jax.Array local or globally replicated) as numpy int64."""
    if isinstance(confusion, jax.Array) and not confusion.is_fully_addressable:
        if not confusion.is_fully_replicated:
            raise ValueError("a confusion matrix sharded across hosts cannot be read on one host; "
                             "compute it with a replicated output sharding")
        confusion = confusion.addressable_data(0)
    return np.asarray(confusion).astype(np.int64)


def sum_across_processes(confusion: np.ndarray) -> np.ndarray:
    """Sums each process's int64 confusion matrix over all hosts (a collective: every process calls it).

    Counts over a large split can pass 2**31 and JAX arrays are 32-bit by default, so each count
    travels as two int32 halves (high and low 31 bits) and is reassembled in int64 on the host.
    """
    confusion = np.asarray(confusion, np.int64)
    if jax.process_count() == 1:
        return confusion
    gathered = multihost_utils.process_allgather(split_int64(confusion))  # (P, 2, ...) int32
    return join_int64(np.asarray(gathered), axis=1).sum(axis=0)


def split_int64(values: np.ndarray) -> np.ndarray:
    """Non-negative int64 (...) -> int32 (2, ...): the high and the low 31 bits (counts < 2**62)."""
    values = np.asarray(values, np.int64)
    if values.size and (values.min() < 0 or values.max() >= 2**62):
        raise ValueError("counts must be in 0..2**62-1 to be summed across processes")
    return np.stack([values >> 31, values & (2**31 - 1)]).astype(np.int32)


def join_int64(halves: np.ndarray, axis: int = 0) -> np.ndarray:
    """Inverse of split_int64: the size-2 ``axis`` of int32 halves -> int64 counts."""
    halves = np.asarray(halves).astype(np.int64)
    return (np.take(halves, 0, axis=axis) << 31) + np.take(halves, 1, axis=axis)


def compute_metrics(confusion: np.ndarray) -> dict[str, Any]:
    """Metrics of a (C, C) confusion matrix ``[gt, pred]`` as plain Python numbers.

    Returns ``miou``, ``pixel_accuracy``, ``mean_accuracy`` (mean per-class recall over the
    classes in the ground truth), ``fwiou`` (IoU weighted by ground-truth frequency), per-class
    lists ``iou`` and ``accuracy`` (NaN where undefined: IoU for a class absent from both ground
    truth and prediction, accuracy for a class absent from the ground truth), ``gt_pixels``,
    ``pred_pixels``, ``num_pixels`` and ``num_classes_evaluated``. Ratios are fractions in [0, 1];
    NaN becomes ``null`` in the JSON written by ``evaluator.save_results``.
    """
    confusion = np.asarray(confusion, np.int64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {confusion.shape}")
    true_positive = np.diag(confusion).astype(np.float64)
    gt_pixels = confusion.sum(axis=1)
    pred_pixels = confusion.sum(axis=0)
    union = gt_pixels + pred_pixels - np.diag(confusion)
    total = int(gt_pixels.sum())

    evaluated = union > 0  # the class occurs in the ground truth or in the prediction
    in_gt = gt_pixels > 0
    iou = np.full(len(confusion), np.nan)
    iou[evaluated] = true_positive[evaluated] / union[evaluated]
    accuracy = np.full(len(confusion), np.nan)
    accuracy[in_gt] = true_positive[in_gt] / gt_pixels[in_gt]
    frequency = gt_pixels / max(total, 1)
    return {
        "miou": _mean(iou[evaluated]),
        "pixel_accuracy": float(true_positive.sum() / total) if total else float("nan"),
        "mean_accuracy": _mean(accuracy[in_gt]),
        "fwiou": float(np.sum(frequency[in_gt] * iou[in_gt])) if total else float("nan"),
        "iou": [float(v) for v in iou],
        "accuracy": [float(v) for v in accuracy],
        "gt_pixels": [int(v) for v in gt_pixels],
        "pred_pixels": [int(v) for v in pred_pixels],
        "num_pixels": total,
        "num_classes_evaluated": int(evaluated.sum()),
    }


def format_table(metrics: dict[str, Any], class_names: Sequence[str] | None = None) -> str:
    """A per-class table (IoU and accuracy in %) followed by the summary metrics, for the console."""
    num_classes = len(metrics["iou"])
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a {num_classes}-class confusion matrix")
    width = max(12, *(len(n) for n in names))

    def pct(value):
        return "     -" if value != value else f"{100 * value:6.2f}"  # NaN: undefined

    lines = [f"{'class':<{width}}  IoU (%)  acc (%)  gt pixels", "-" * (width + 30)]
    for name, iou, acc, gt in zip(names, metrics["iou"], metrics["accuracy"], metrics["gt_pixels"]):
        lines.append(f"{name:<{width}}   {pct(iou)}   {pct(acc)}  {gt:>10d}")
    lines.append("-" * (width + 30))
    lines.append(f"{'mIoU':<{width}}   {pct(metrics['miou'])}   "
                 f"({metrics['num_classes_evaluated']}/{num_classes} classes present)")
    for key, label in (("pixel_accuracy", "pixel acc"), ("mean_accuracy", "mean acc"), ("fwiou", "fwIoU")):
        lines.append(f"{label:<{width}}   {pct(metrics[key])}")
    return "\n".join(lines)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")
