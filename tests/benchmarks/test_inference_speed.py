"""The inference speed benchmark runs and reports sane fields (no timing assertions)."""
from __future__ import annotations

import importlib.util
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bisenet_jax.benchmarks import inference_speed
from bisenet_jax.benchmarks import machine
from bisenet_jax.models import create_model
from bisenet_jax.models.summary import count_params


def test_benchmark_model_reports_consistent_latency_fps_params_and_flops(tiny_model):
    model, variables = tiny_model
    (result,) = inference_speed.benchmark_model(model, variables, 2, 32, 48, model_name="tiny", warmup=1,
                                                iterations=4)
    assert (result.framework, result.model) == ("jax", "tiny")
    assert (result.batch_size, result.height, result.width) == (2, 32, 48)
    assert 0 < result.latency_ms_min <= result.latency_ms_p10 <= result.latency_ms_median <= result.latency_ms_p90
    assert result.fps == pytest.approx(2 * 1000 / result.latency_ms_median)
    assert result.iterations == 4 and result.warmup == 1 and result.compile_seconds > 0
    assert 0 <= result.other_cpu_percent <= 100 or math.isnan(result.other_cpu_percent)
    assert result.params == 3 * 3 * 3 * 8 + 8 + 3 * 3 * 8 * 4 + 4
    # Two 3x3 convs: at least 2 FLOPs per multiply-add of the interior pixels.
    macs = 2 * (16 * 24 * 8 * 27 + 16 * 24 * 4 * 72)
    assert macs * 2 * 0.8 < result.gflops * 1e9 < macs * 2 * 2
    assert "tiny" in inference_speed.format_results([result])


def test_quiet_mode_keeps_only_quiet_iterations_and_reports_the_rounds(tiny_model, monkeypatch):
    model, variables = tiny_model
    monkeypatch.setattr(machine.CpuUsage, "others_percent", lambda self: 30.0)  # a machine 30 % busy
    (result,) = inference_speed.benchmark_model(model, variables, 1, 32, 48, warmup=0, iterations=3, quiet_percent=50.0)
    assert result.rounds == 3 and result.iterations == 3 and result.quiet_samples == 3
    assert result.other_cpu_percent == 30.0
    # Nothing is quiet at 10 %: it times max_rounds and falls back to all of them, marked as not quiet.
    (result,) = inference_speed.benchmark_model(model, variables, 1, 32, 48, warmup=0, iterations=2, quiet_percent=10.0,
                                      max_rounds=4)
    assert result.rounds == 4 and result.iterations == 4 and result.quiet_samples == 0
    assert "NOT QUIET" in inference_speed.format_results([result])


def test_random_variables_have_the_model_shapes_and_neutral_batch_norm():
    model = create_model("bisenetv2", 3, aux_heads=False)
    variables = inference_speed.random_variables(model, (1, 64, 64, 3))
    reference = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(reference)
    assert all(a.shape == b.shape
               for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(reference)))
    stats = variables["batch_stats"]["detail"]["S1"]["0"]["bn"]
    np.testing.assert_array_equal(stats["var"], 1.0)
    np.testing.assert_array_equal(stats["mean"], 0.0)
    assert count_params(variables) > 3_000_000


def test_cpu_usage_of_other_processes_is_a_percentage():
    usage = machine.CpuUsage()
    sum(i * i for i in range(200_000))  # some CPU time of our own, which must not count
    value = usage.others_percent()
    assert math.isnan(value) or 0 <= value <= 100


def test_environment_and_protocol_name_device_threads_and_iterations():
    env = machine.environment()
    text = inference_speed.format_protocol(env, warmup=2, iterations=7)
    assert env["cpus"] >= 1 and jax.__version__ in text
    assert "2 warm-up + 7 timed iterations" in text and "median" in text


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_compare_torch_runs_the_reference_module_with_the_same_weights_and_threads():
    pytest.importorskip("bisenet_jax.convert.torch_models")
    import torch

    results = inference_speed.benchmark("bisenetv1_r18", 5, [(64, 64)], warmup=1, iterations=2, compare_torch=True)
    jax_result, torch_result = results
    assert (jax_result.framework, torch_result.framework) == ("jax", "torch")
    assert torch_result.params == jax_result.params
    assert torch_result.threads == torch.get_num_threads() == machine.cpu_count()
    assert torch_result.max_rel_diff < 1e-4  # the same network and weights
    assert math.isnan(torch_result.gflops)
    assert "JAX speed-up x" in inference_speed.format_results(results)


def test_the_benchmark_compiles_the_forward_as_evaluation_does_and_prints_it(monkeypatch, tiny_model):
    """``benchmark_speed.py`` times the program users run: compiled with ``xla_flags.inference_options()``
    (here as on an x86 CPU without AVX-512), named in the protocol."""
    from bisenet_jax import xla_flags

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv(xla_flags.OPT_OUT, raising=False)
    monkeypatch.setattr(xla_flags, "cpu_has_avx512", lambda cpuinfo=None: False)
    compiled_with, real_compile = [], jax.stages.Lowered.compile

    def spy(self, compiler_options=None, **kwargs):
        compiled_with.append(compiler_options)
        return real_compile(self, compiler_options=compiler_options, **kwargs)

    monkeypatch.setattr(jax.stages.Lowered, "compile", spy)
    model, variables = tiny_model
    x = jnp.ones((1, 32, 32, 3))
    forward, _ = inference_speed.compile_jax_forward(model, variables, x)
    assert compiled_with == [xla_flags.inference_options("cpu", {}, avx512=False)] != [{}]
    np.testing.assert_allclose(forward(variables, x), model.apply(variables, x, train=False), rtol=1e-5, atol=1e-5)
    protocol = inference_speed.format_protocol(machine.environment(), 1, 2)
    assert "inference compiled with --xla_cpu_experimental_ynn_fusion_type=dot,reduce" in protocol
