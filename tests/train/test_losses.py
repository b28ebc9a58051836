"""Losses against independent numpy computations."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bisenet_jax.models.kernels import CPU_KERNELS, XLA_KERNELS
from bisenet_jax.train.losses import cross_entropy, ohem_cross_entropy, segmentation_loss, sum_of_top_k

KERNELS = pytest.mark.parametrize("kernels", [CPU_KERNELS, XLA_KERNELS], ids=lambda k: k.name)


def _numpy_pixel_ce(logits, labels, ignore):
    logits = logits.astype(np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    valid = labels != ignore
    picked = np.take_along_axis(logits, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    return np.where(valid, logz - picked, 0.0), valid


def _numpy_ohem(logits, labels, ignore, thresh=0.7):
    losses, valid = _numpy_pixel_ce(logits, labels, ignore)
    losses = losses.reshape(-1)
    n_min = int(valid.sum()) // 16
    hard = losses[losses > -math.log(thresh)]
    if hard.size < n_min:
        hard = np.sort(losses)[::-1][:n_min]
    return hard.mean()


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 12, 10, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, size=(2, 12, 10))
    labels[rng.random(labels.shape) < 0.2] = 255
    return logits, labels


def test_cross_entropy_averages_valid_pixels_only(batch):
    logits, labels = batch
    losses, valid = _numpy_pixel_ce(logits, labels, 255)
    np.testing.assert_allclose(cross_entropy(jnp.asarray(logits), jnp.asarray(labels)), losses.sum() / valid.sum(),
                               rtol=1e-5)


def test_ohem_averages_the_hard_pixels_when_enough_pass(batch):
    logits, labels = batch  # random logits: most pixels exceed -ln(0.7)
    losses, _ = _numpy_pixel_ce(logits, labels, 255)
    assert (losses > -math.log(0.7)).sum() > labels.size // 16
    np.testing.assert_allclose(ohem_cross_entropy(jnp.asarray(logits), jnp.asarray(labels)),
                               _numpy_ohem(logits, labels, 255), rtol=1e-5)


def test_ohem_keeps_the_n_min_largest_when_few_are_hard(batch):
    logits, labels = batch
    confident = logits.copy()
    onehot = np.eye(5, dtype=np.float32)[np.where(labels == 255, 0, labels)]
    confident += 20 * onehot  # almost every pixel is easy ...
    confident[0, 0, :3] = logits[0, 0, :3]  # ... except three pixels
    losses, valid = _numpy_pixel_ce(confident, labels, 255)
    assert (losses > -math.log(0.7)).sum() < valid.sum() // 16
    got = ohem_cross_entropy(jnp.asarray(confident), jnp.asarray(labels))
    np.testing.assert_allclose(got, _numpy_ohem(confident, labels, 255), rtol=1e-5)


def test_all_ignored_gives_zero_not_nan():
    logits = jnp.ones((1, 8, 8, 3))
    labels = jnp.full((1, 8, 8), 255)
    assert float(cross_entropy(logits, labels)) == 0.0
    assert float(ohem_cross_entropy(logits, labels)) == 0.0


def test_out_of_range_labels_are_ignored_not_nan():
    logits = jnp.zeros((1, 4, 4, 3))
    labels = jnp.array([[[0, 1, 2, 7]] * 4])  # 7 is outside the 3 classes
    assert float(cross_entropy(logits, labels)) == pytest.approx(math.log(3), rel=1e-6)


def test_segmentation_loss_sums_main_and_weighted_aux(batch):
    logits, labels = batch
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    aux = [logits * 0.5, logits * 2.0]
    total, terms = segmentation_loss(logits, aux, labels, name="ce", aux_weight=0.4)
    assert sorted(terms) == ["loss_aux1", "loss_aux2", "loss_main"]
    expected = cross_entropy(logits, labels) + 0.4 * (cross_entropy(aux[0], labels) + cross_entropy(aux[1], labels))
    np.testing.assert_allclose(total, expected, rtol=1e-6)


def test_ohem_is_differentiable_under_jit(batch):
    logits, labels = batch
    grad = jax.jit(jax.grad(lambda lg: ohem_cross_entropy(lg, jnp.asarray(labels))))(jnp.asarray(logits))
    assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).sum() > 0


@KERNELS
@pytest.mark.parametrize("k", [1, 7, 500, 1000])
def test_sum_of_top_k_equals_a_sort_with_ties_and_zeros(k, kernels):
    rng = np.random.default_rng(k)
    values = rng.exponential(size=1000).astype(np.float32)
    values[:300] = 0.0  # ignored pixels
    values[300:340] = values[500]  # a block of ties around the middle
    want = np.sort(values)[::-1][:k].sum(dtype=np.float64)
    got, grad = jax.value_and_grad(sum_of_top_k)(jnp.asarray(values), jnp.int32(k), kernels)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    grad = np.asarray(grad)
    kth = np.sort(values)[::-1][k - 1]
    assert np.all(grad[values > kth] == 1.0) and np.all(grad[values < kth] == 0.0)
    np.testing.assert_allclose(grad.sum(), k, rtol=1e-5)  # the tied values share what is left


def _few_hard(batch):
    """Logits where almost every pixel is easy: OHEM averages its n_min largest losses."""
    logits, labels = batch
    confident = logits + 20 * np.eye(5, dtype=np.float32)[np.where(labels == 255, 0, labels)]
    confident[0, 0, :3] = logits[0, 0, :3]
    return jnp.asarray(confident), jnp.asarray(labels)


def test_ohem_selection_is_the_same_with_either_kernels(batch):
    """The bisection (CPU) and the sort (XLA) find the same n_min-th largest loss, so the same pixels
    are kept: the loss and its gradient agree (float32; the same sums in the same order: 1e-6)."""
    logits, labels = _few_hard(batch)
    results = {kernels.name: jax.jit(jax.value_and_grad(
        lambda lg, kernels=kernels: ohem_cross_entropy(lg, labels, kernels=kernels)))(logits)
        for kernels in (CPU_KERNELS, XLA_KERNELS)}
    (cpu_loss, cpu_grad), (xla_loss, xla_grad) = results["cpu"], results["xla"]
    np.testing.assert_allclose(cpu_loss, xla_loss, rtol=1e-6)
    np.testing.assert_allclose(cpu_grad, xla_grad, rtol=1e-6, atol=1e-9)
    kept = np.abs(np.asarray(cpu_grad)).sum(-1) > 0
    assert kept.sum() == int((np.asarray(labels) != 255).sum()) // 16  # exactly n_min pixels get a gradient
    np.testing.assert_array_equal(kept, np.abs(np.asarray(xla_grad)).sum(-1) > 0)


@pytest.mark.parametrize("kernels", ["auto", "cpu", "xla", CPU_KERNELS])
def test_segmentation_loss_takes_the_kernels_as_a_last_keyword(batch, kernels):
    logits, labels = _few_hard(batch)
    total, terms = segmentation_loss(logits, [logits * 0.5], labels, name="ohem", ignore_label=255, aux_weight=0.4,
                                     ohem_thresh=0.7, kernels=kernels)
    expected = ohem_cross_entropy(logits, labels, kernels=XLA_KERNELS)
    np.testing.assert_allclose(terms["loss_main"], expected, rtol=1e-6)
    np.testing.assert_allclose(total, expected + 0.4 * ohem_cross_entropy(logits * 0.5, labels, kernels=XLA_KERNELS),
                               rtol=1e-6)
