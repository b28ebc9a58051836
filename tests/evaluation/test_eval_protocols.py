"""ss, ssc, msf and mscf against independent computations with the model called directly."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bisenet_jax.evaluation import evaluator
from bisenet_jax.evaluation.evaluator import default_eval_config


def config(**overrides):
    cfg = default_eval_config()
    cfg.update(overrides)
    return cfg


def scores(model, variables, images, **overrides):
    fn = evaluator.make_score_fn(evaluator.model_logits_fn(model), config(**overrides))
    return np.asarray(jax.jit(fn)(variables, images))


def logits(model, variables, images):
    """The model called directly (one jitted program per shape, cheaper than op-by-op)."""
    return np.asarray(_apply(model)(variables, jnp.asarray(images)))


@functools.cache
def _apply(model):
    return jax.jit(lambda variables, x: model.apply(variables, x, train=False))


@functools.partial(jax.jit, static_argnums=1)
def bilinear(x, shape):
    return jax.image.resize(x, shape, "bilinear", antialias=False)


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_window_starts_cover_the_image_and_end_at_the_edge():
    assert evaluator.window_starts(100, 40, 27) == [0, 27, 54, 60]
    assert evaluator.window_starts(40, 40, 27) == [0]
    assert evaluator.window_starts(30, 40, 27) == [0]
    assert evaluator.stride_pixels(1024, 2 / 3) == 683
    assert evaluator.stride_pixels(1024, 512) == 512
    with pytest.raises(ValueError, match="stride"):
        evaluator.stride_pixels(1024, 0)


def test_sliding_window_equals_whole_image_when_the_crop_covers_the_image(tiny_model, tiny_images):
    model, variables = tiny_model
    whole = scores(model, variables, tiny_images, mode="ss")
    cropped = scores(model, variables, tiny_images, mode="ssc", crop_size=(48, 64), stride=2 / 3)
    np.testing.assert_array_equal(cropped, whole)


def test_sliding_window_averages_logits_of_overlapping_crops(tiny_model, tiny_images):
    model, variables = tiny_model
    images = np.asarray(tiny_images)
    result = scores(model, variables, images, mode="ssc", crop_size=(32, 40), stride=0.5)
    # Independent computation: windows at rows (0, 16) and columns (0, 20, 24).
    total = np.zeros(result.shape, np.float64)
    count = np.zeros(result.shape[:3] + (1,))
    for y in (0, 16):
        for x in (0, 20, 24):
            total[:, y:y + 32, x:x + 40] += logits(model, variables, images[:, y:y + 32, x:x + 40])
            count[:, y:y + 32, x:x + 40] += 1
    np.testing.assert_allclose(result, total / count, rtol=1e-5, atol=1e-5)


def test_images_smaller_than_the_crop_are_padded_with_zeros_and_cut_back(tiny_model, tiny_images):
    model, variables = tiny_model
    images = np.asarray(tiny_images)
    result = scores(model, variables, images, mode="ssc", crop_size=(64, 64), stride=2 / 3)
    padded = np.pad(images, ((0, 0), (0, 16), (0, 0), (0, 0)))
    np.testing.assert_allclose(result, logits(model, variables, padded)[:, :48], rtol=1e-5, atol=1e-5)
    assert result.shape == (2, 48, 64, 4)


def test_msf_with_scale_one_and_no_flip_equals_single_scale(tiny_model, tiny_images):
    model, variables = tiny_model
    ss = scores(model, variables, tiny_images, mode="ss")
    msf = scores(model, variables, tiny_images, mode="msf", scales=(1.0,), flip=False)
    np.testing.assert_allclose(msf, softmax(ss), rtol=1e-5, atol=1e-6)
    predict_ss = evaluator.make_predict_fn(model, config(mode="ss"))(variables, tiny_images)
    predict_msf = evaluator.make_predict_fn(model, config(mode="msf", scales=(1.0,), flip=False))(variables, tiny_images)
    np.testing.assert_array_equal(predict_msf, predict_ss)


def test_flip_sums_probabilities_of_the_image_and_of_its_mirror_flipped_back(tiny_model, tiny_images):
    model, variables = tiny_model
    images = np.asarray(tiny_images)
    result = scores(model, variables, images, mode="msf", scales=(1.0,), flip=True)
    mirrored = logits(model, variables, images[:, :, ::-1])[:, :, ::-1]
    expected = softmax(logits(model, variables, images)) + softmax(mirrored)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
    # The model is not mirror-symmetric, so flipping really changed something.
    assert np.abs(mirrored - logits(model, variables, images)).max() > 1e-3


def test_multi_scale_sums_probabilities_of_rescaled_images_resized_back(tiny_model, tiny_images):
    model, variables = tiny_model
    images = np.asarray(tiny_images)
    result = scores(model, variables, images, mode="msf", scales=(0.75, 1.5), flip=False)
    expected = 0
    for size in ((36, 48), (72, 96)):
        scaled = bilinear(images, (2, *size, 3))
        back = bilinear(logits(model, variables, scaled), (2, 48, 64, 4))
        expected = expected + softmax(np.asarray(back))
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)
    assert np.allclose(result.sum(-1), 2.0, atol=1e-4)  # two probability maps summed


def test_mscf_equals_msf_when_the_crop_covers_the_image(tiny_model, tiny_images):
    model, variables = tiny_model
    msf = scores(model, variables, tiny_images, mode="msf", scales=(1.0,), flip=True)
    mscf = scores(model, variables, tiny_images, mode="mscf", scales=(1.0,), flip=True, crop_size=(48, 64))
    np.testing.assert_allclose(mscf, msf, rtol=1e-5, atol=1e-6)


def test_mscf_uses_sliding_crops_at_each_scale(tiny_model, tiny_images):
    model, variables = tiny_model
    images = np.asarray(tiny_images)
    result = scores(model, variables, images, mode="mscf", scales=(1.0,), flip=False, crop_size=(32, 40), stride=0.5)
    crops = scores(model, variables, images, mode="ssc", crop_size=(32, 40), stride=0.5)
    np.testing.assert_allclose(result, softmax(crops), rtol=1e-5, atol=1e-6)


def test_unknown_mode_names_the_valid_ones(tiny_model):
    model, _ = tiny_model
    with pytest.raises(ValueError, match="ss, ssc, msf, mscf"):
        evaluator.make_score_fn(evaluator.model_logits_fn(model), config(mode="multi"))


def test_size_divisor_pads_each_forward_pass_to_multiples_and_cuts_the_padding(tiny_model, tiny_images):
    model, variables = tiny_model
    images = np.asarray(tiny_images)  # 48x64: rows padded to 64 by a divisor of 32, columns already a multiple
    result = scores(model, variables, images, mode="ss", size_divisor=32)
    padded = np.pad(images, ((0, 0), (0, 16), (0, 0), (0, 0)))
    np.testing.assert_allclose(result, logits(model, variables, padded)[:, :48], rtol=1e-5, atol=1e-5)
    assert result.shape == (2, 48, 64, 4)
    # The padding reaches the logits near the bottom edge, so the option really changed the computation.
    plain = scores(model, variables, images, mode="ss")
    assert np.abs(result - plain).max() > 1e-3
    for off in (0, 1):
        np.testing.assert_array_equal(scores(model, variables, images, mode="ss", size_divisor=off), plain)
    np.testing.assert_array_equal(scores(model, variables, images, mode="ss", size_divisor=16), plain)  # 48, 64 divide


def test_size_divisor_applies_to_every_crop_and_scaled_image(tiny_model, tiny_images):
    model, variables = tiny_model
    images = np.asarray(tiny_images)
    # ssc: a single 40x40 crop at the top left is padded to 64x64 like any forward pass.
    crop = scores(model, variables, images[:, :40, :40], mode="ssc", crop_size=(40, 40), stride=1.0, size_divisor=32)
    manual = np.pad(images[:, :40, :40], ((0, 0), (0, 24), (0, 24), (0, 0)))
    np.testing.assert_allclose(crop, logits(model, variables, manual)[:, :40, :40], rtol=1e-5, atol=1e-5)
    # msf: the image scaled to 36x48 is padded to 64x64, its logits cut to 36x48 and resized back.
    result = scores(model, variables, images, mode="msf", scales=(0.75,), flip=False, size_divisor=32)
    scaled = np.asarray(bilinear(images, (2, 36, 48, 3)))
    cut = logits(model, variables, np.pad(scaled, ((0, 0), (0, 28), (0, 16), (0, 0))))[:, :36, :48]
    expected = softmax(np.asarray(bilinear(cut, (2, 48, 64, 4))))
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)


def test_size_divisor_must_be_a_whole_number_and_is_described(tiny_model):
    model, _ = tiny_model
    # (--config.eval.size_divisor=2.5 already fails in ml_collections, whose field is an int; an eval
    # config built from a dict, e.g. a results JSON, reaches this check.)
    for bad in (-32, 2.5, "32", True):
        with pytest.raises(ValueError, match="size_divisor"):
            evaluator.make_score_fn(evaluator.model_logits_fn(model),
                                    ml_collections.ConfigDict({**config().to_dict(), "size_divisor": bad}))
    assert evaluator.describe_protocol(config(mode="ss", size_divisor=32)) == "ss: inputs padded to multiples of 32"
    assert evaluator.describe_protocol(config(mode="ss")) == "ss"
    # An eval config saved before the field existed (e.g. in a results JSON) reads as no padding.
    old = ml_collections.ConfigDict({k: v for k, v in config().items() if k != "size_divisor"})
    assert dict(evaluator._protocol(old))["size_divisor"] == 0
    assert evaluator.describe_protocol(old) == "ss"
    evaluator.make_score_fn(evaluator.model_logits_fn(model), old)  # no KeyError


def test_predict_and_eval_programs_take_the_inference_options_with_the_same_results(monkeypatch, tiny_model,
                                                                                  tiny_images):
    """The predict and eval-step programs are jitted with ``xla_flags.inference_options()`` (on an x86 CPU
    without AVX-512: convolutions to XLA's own, not YNNPACK), and predict and count the same either way."""
    from bisenet_jax import xla_flags

    model, variables = tiny_model
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv(xla_flags.OPT_OUT, raising=False)
    labels = np.array(evaluator.make_predict_fn(model)(variables, tiny_images))
    labels[:, ::7] = 255  # some ignored pixels
    real_jit, seen, results = jax.jit, [], {}
    monkeypatch.setattr(evaluator.jax, "jit", lambda fun, **kw: seen.append(kw) or real_jit(fun, **kw))
    for avx512 in (True, False):
        monkeypatch.setattr(xla_flags, "cpu_has_avx512", lambda cpuinfo=None, value=avx512: value)
        predictions = evaluator.make_predict_fn(model)(variables, tiny_images)
        confusion = evaluator.make_eval_step(model, 4)(variables, tiny_images, labels)
        results[avx512] = np.asarray(predictions), np.asarray(confusion)
    want = xla_flags.inference_options("cpu", {}, avx512=False)
    assert want and [kw.get("compiler_options") for kw in seen] == [None, None, want, want]
    # Logits agree to float32 rounding (about 1e-6 relative), so at most a near-tie may flip (in either program).
    assert (results[False][0] != results[True][0]).sum() <= 6 and results[True][0].size == 2 * 48 * 64
    assert np.abs(results[False][1] - results[True][1]).sum() <= 12
    assert results[True][1].sum() == results[False][1].sum() == (labels != 255).sum()
