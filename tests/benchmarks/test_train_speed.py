"""The train-step benchmark runs both frameworks and reports consistent fields (no timing asserts)."""
from __future__ import annotations

import pytest

from bisenet_jax.benchmarks import train_speed


def test_jax_and_torch_train_speed_report_the_protocol_fields():
    pytest.importorskip("torch")
    jax_result = train_speed.jax_train_speed("bisenetv1_x39", 2, 64, 64, num_classes=3, warmup=1, steps=2)
    torch_result = train_speed.torch_train_speed("bisenetv1_x39", 2, 64, 64, num_classes=3, warmup=1, steps=2)
    for r, framework in ((jax_result, "jax"), (torch_result, "torch")):
        assert r["framework"] == framework and r["steps"] == 2 and (r["height"], r["width"]) == (64, 64)
        assert 0 < r["step_seconds_min"] <= r["step_seconds_median"] <= r["step_seconds_max"]
        assert r["images_per_second"] == pytest.approx(2 / r["step_seconds_median"])
    assert jax_result["compile_seconds"] > 0
