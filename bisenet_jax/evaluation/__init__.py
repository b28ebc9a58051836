"""Evaluation, prediction and speed: exact mIoU under the ss / ssc / msf / mscf protocols,
prediction of images, folders and videos, and a protocol-printing speed benchmark."""
from __future__ import annotations

from bisenet_jax.evaluation.evaluator import (MODES, default_eval_config, describe_protocol, evaluate,
                                              format_results, make_eval_step, make_predict_fn, make_score_fn,
                                              save_results)
from bisenet_jax.evaluation.metrics import compute_metrics, confusion_matrix, format_table, sum_across_processes

__all__ = [
    "MODES", "compute_metrics", "confusion_matrix", "default_eval_config", "describe_protocol", "evaluate",
    "format_results", "format_table", "make_eval_step", "make_predict_fn", "make_score_fn", "save_results",
    "sum_across_processes",
]
