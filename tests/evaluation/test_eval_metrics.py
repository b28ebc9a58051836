"""Confusion matrix and metrics against an independent numpy computation."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bisenet_jax.evaluation import metrics

IGNORE = 255


def numpy_reference(labels, predictions, num_classes, ignore_label=IGNORE):
    """Per-class IoU from pixel sets, written without a confusion matrix."""
    valid = labels != ignore_label
    ious = {}
    for c in range(num_classes):
        gt, pred = (labels == c) & valid, (predictions == c) & valid
        union = np.sum(gt | pred)
        if union:
            ious[c] = np.sum(gt & pred) / union
    pixel_accuracy = np.sum((labels == predictions) & valid) / np.sum(valid)
    return ious, pixel_accuracy


def random_case(seed, shape=(3, 17, 23), num_classes=6, ignore_fraction=0.2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, shape)
    labels[rng.random(shape) < ignore_fraction] = IGNORE
    predictions = rng.integers(0, num_classes, shape)
    return labels.astype(np.int32), predictions.astype(np.int32)


def test_confusion_matrix_counts_gt_rows_and_prediction_columns_and_skips_ignore():
    labels = np.array([[0, 0, 1, IGNORE], [2, 1, 1, 0]])
    predictions = np.array([[0, 1, 1, 2], [2, 2, 1, 0]])
    expected = np.array([[2, 1, 0], [0, 2, 1], [0, 0, 1]])
    np.testing.assert_array_equal(metrics.confusion_matrix(jnp.asarray(labels), jnp.asarray(predictions), 3), expected)


def test_confusion_matrix_is_jittable_and_matches_numpy_bincount():
    labels, predictions = random_case(0)
    confusion = jax.jit(metrics.confusion_matrix, static_argnums=2)(labels, predictions, 6)
    valid = labels != IGNORE
    expected = np.bincount(labels[valid] * 6 + predictions[valid], minlength=36).reshape(6, 6)
    assert confusion.dtype == jnp.int32
    np.testing.assert_array_equal(confusion, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_miou_equals_independent_numpy_computation_with_ignore_pixels(seed):
    labels, predictions = random_case(seed)
    result = metrics.compute_metrics(metrics.to_host(metrics.confusion_matrix(labels, predictions, 6)))
    ious, pixel_accuracy = numpy_reference(labels, predictions, 6)
    assert result["iou"] == pytest.approx([ious.get(c, np.nan) for c in range(6)], nan_ok=True)
    assert result["miou"] == pytest.approx(np.mean(list(ious.values())), abs=1e-12)
    assert result["pixel_accuracy"] == pytest.approx(pixel_accuracy, abs=1e-12)
    assert result["num_pixels"] == int(np.sum(labels != IGNORE))


def test_confusion_accumulated_over_batches_equals_one_confusion_over_the_split():
    """mIoU of the split, not the mean of per-image mIoUs."""
    labels, predictions = random_case(3, shape=(4, 9, 11))
    per_image = sum(metrics.to_host(metrics.confusion_matrix(l, p, 6)) for l, p in zip(labels, predictions))
    whole = metrics.to_host(metrics.confusion_matrix(labels, predictions, 6))
    np.testing.assert_array_equal(per_image, whole)
    mean_of_images = np.mean([metrics.compute_metrics(metrics.to_host(metrics.confusion_matrix(l, p, 6)))["miou"]
                              for l, p in zip(labels, predictions)])
    assert metrics.compute_metrics(whole)["miou"] != pytest.approx(mean_of_images)


def test_classes_absent_from_ground_truth_and_prediction_are_excluded_from_miou():
    labels = np.array([0, 0, 1, 1, 3, IGNORE])
    predictions = np.array([0, 1, 1, 1, 4, 2])  # class 2 only predicted on an ignored pixel
    result = metrics.compute_metrics(metrics.to_host(metrics.confusion_matrix(labels, predictions, 5)))
    # IoU: class 0 = 1/2, class 1 = 2/3, class 2 absent, class 3 = 0 (in GT), class 4 = 0 (predicted)
    assert result["iou"] == pytest.approx([0.5, 2 / 3, np.nan, 0.0, 0.0], nan_ok=True)
    assert result["miou"] == pytest.approx((0.5 + 2 / 3) / 4)
    assert result["num_classes_evaluated"] == 4
    # No +1 in the denominator: a perfect prediction gives exactly 1.
    perfect = metrics.compute_metrics(metrics.to_host(metrics.confusion_matrix(labels, np.where(labels == IGNORE, 0, labels), 5)))
    assert perfect["miou"] == 1.0


def test_mean_accuracy_and_frequency_weighted_iou():
    confusion = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])  # class 2 absent everywhere
    result = metrics.compute_metrics(confusion)
    iou = [8 / 11, 3 / 6]
    assert result["mean_accuracy"] == pytest.approx((8 / 10 + 3 / 4) / 2)
    assert result["fwiou"] == pytest.approx(10 / 14 * iou[0] + 4 / 14 * iou[1])
    assert result["pixel_accuracy"] == pytest.approx(11 / 14)
    assert np.isnan(result["accuracy"][2]) and np.isnan(result["iou"][2])


def test_sum_across_processes_is_identity_on_one_process_and_keeps_int64():
    confusion = np.array([[2**40, 1], [0, 3]], np.int64)
    np.testing.assert_array_equal(metrics.sum_across_processes(confusion), confusion)


def test_format_table_lists_every_class_with_percentages():
    result = metrics.compute_metrics(np.array([[3, 1], [0, 0]]))
    table = metrics.format_table(result, ["road", "sky"])
    assert "road" in table and "75.00" in table  # road IoU 3/4
    assert "sky" in table and "mIoU" in table
    with pytest.raises(ValueError, match="class names"):
        metrics.format_table(result, ["road"])


def test_int64_counts_survive_the_int32_halves_used_between_hosts():
    counts = np.array([[0, 1, 2**31 - 1], [2**31, 2**40 + 12345, 7]], np.int64)
    halves = metrics.split_int64(counts)
    assert halves.dtype == np.int32 and halves.shape == (2, 2, 3)
    np.testing.assert_array_equal(metrics.join_int64(halves), counts)
    gathered = np.stack([halves, halves])  # what process_allgather returns for two processes
    np.testing.assert_array_equal(metrics.join_int64(gathered, axis=1).sum(axis=0), 2 * counts)
