"""The --torch-compile rows of the train-step and inference benchmarks (PyTorch inductor on the CPU).

Compiling a BiSeNet with inductor takes minutes on two cores (cold cache: ~4 min for BiSeNetV2's train
step at 64x64, ~1.5 min for its forward), so these tests compile a two-convolution network instead
(with BatchNorm and an auxiliary head in training, like the BiSeNets) through the same code path:
``torch_reference.compile_model``, ``train_speed.torch_compile_train_speed`` (the reference model
swapped for the tiny one) and ``inference_speed.benchmark_model(torch_compile=True)``. The real models
are compiled by the benchmark scripts themselves.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from bisenet_jax.benchmarks import inference_speed, torch_reference, train_speed  # noqa: E402


class TinyTorchSegmenter(torch.nn.Module):
    """conftest's ``TwoConvSegmenter`` in PyTorch (flax's SAME padding of the stride-2 conv: 0 before, 1
    after); ``train_extras`` adds BatchNorm after the first conv and an auxiliary head, and then the
    module returns ``(logits, [aux_logits])`` in training mode, as the reference BiSeNets do."""

    def __init__(self, num_classes: int = 4, train_extras: bool = False):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, stride=2, bias=not train_extras)  # no bias before BN
        self.bn = torch.nn.BatchNorm2d(8) if train_extras else torch.nn.Identity()
        self.conv_out = torch.nn.Conv2d(8, num_classes, 3, padding=1)
        self.aux = torch.nn.Conv2d(8, num_classes, 1) if train_extras else None

    def forward(self, x):
        h = F.relu(self.bn(self.conv1(F.pad(x, (0, 1, 0, 1)))))
        up = lambda t: F.interpolate(t, size=x.shape[2:], mode="bilinear", align_corners=False)  # noqa: E731
        logits = up(self.conv_out(h))
        if self.training and self.aux is not None:
            return logits, [up(self.aux(h))]
        return logits


def _load_flax_weights(module: TinyTorchSegmenter, variables: dict) -> TinyTorchSegmenter:
    params = variables["params"]
    with torch.no_grad():
        for conv, name in ((module.conv1, "Conv_0"), (module.conv_out, "Conv_1")):
            conv.weight.copy_(torch.from_numpy(np.asarray(params[name]["kernel"]).transpose(3, 2, 0, 1).copy()))
            conv.bias.copy_(torch.from_numpy(np.asarray(params[name]["bias"])))
    return module.eval()


def _config(num_classes=4, batch_size=2, height=32, width=32):
    return train_speed.benchmark_config("bisenetv2", num_classes, "float32", batch_size, height, width)


def test_one_compiled_train_step_changes_the_parameters_as_the_eager_step():
    config = _config()
    torch.manual_seed(0)
    eager = TinyTorchSegmenter(4, train_extras=True).train()
    compiled = copy.deepcopy(eager)
    before = {name: p.detach().clone() for name, p in eager.named_parameters()}
    images, labels = torch_reference.to_torch(train_speed.random_batch(2, 32, 32, 4))
    # The optimizer is built on the module itself (compile_model's contract), then the module is compiled.
    eager_opt = torch_reference.create_optimizer(eager, config.optimizer)
    compiled_opt = torch_reference.create_optimizer(compiled, config.optimizer)
    eager_loss, _ = torch_reference.train_step(eager, eager_opt, images, labels, config.loss, 255)
    compiled_loss, _ = torch_reference.train_step(torch_reference.compile_model(compiled), compiled_opt, images,
                                                  labels, config.loss, 255)
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    compiled_params = dict(compiled.named_parameters())
    for name, p in eager.named_parameters():
        eager_update = p.detach() - before[name]
        compiled_update = compiled_params[name].detach() - before[name]
        assert eager_update.abs().max() > 0, name  # the step did change it
        error = (compiled_update - eager_update).abs().max() / eager_update.abs().max()
        assert error < 1e-3, (name, float(error))
    torch.testing.assert_close(compiled.bn.running_mean, eager.bn.running_mean, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(compiled.bn.running_var, eager.bn.running_var, rtol=1e-4, atol=1e-6)


def test_torch_compile_train_speed_reports_compile_and_step_times(monkeypatch):
    monkeypatch.setattr(torch_reference, "reference_model",
                        lambda config: TinyTorchSegmenter(config.model.num_classes, train_extras=True))
    with torch_reference.fresh_inductor_cache():  # cold, as the benchmark scripts compile (a warm one may take no time)
        r = train_speed.torch_compile_train_speed("bisenetv2", 2, 32, 32, num_classes=4, warmup=1, steps=2)
    assert (r["framework"], r["error"], r["steps"]) == ("torch-compile", "", 2)
    assert 0 < r["step_seconds_min"] <= r["step_seconds_median"] <= r["step_seconds_max"] < math.inf
    assert r["images_per_second"] == pytest.approx(2 / r["step_seconds_median"])
    assert r["first_call_seconds"] > r["step_seconds_median"]
    assert r["compile_seconds"] == pytest.approx(r["first_call_seconds"] - r["step_seconds_median"])
    assert r["compile_seconds"] > 0


def test_compiled_inference_logits_equal_eager_and_jax(tiny_model):
    model, variables = tiny_model
    torch_model = _load_flax_weights(TinyTorchSegmenter(4), variables)
    with torch_reference.fresh_inductor_cache():  # cold, as the benchmark scripts compile
        results = inference_speed.benchmark_model(model, variables, 2, 32, 48, model_name="tiny", warmup=1,
                                                  iterations=2, torch_model=torch_model, torch_compile=True)
    assert [r.framework for r in results] == ["jax", "torch", "torch-compile"]
    eager, compiled = results[1], results[2]
    assert eager.max_rel_diff < 1e-4  # the PyTorch twin is the same network
    assert compiled.error == ""
    assert compiled.max_rel_diff_eager < 1e-4 and compiled.max_rel_diff < 1e-4
    assert 0 < compiled.latency_ms_min <= compiled.latency_ms_median < math.inf and compiled.iterations == 2
    assert compiled.first_call_seconds > compiled.latency_ms_median / 1e3
    assert compiled.compile_seconds > 0 and compiled.params == eager.params
    table = inference_speed.format_results(results)
    assert "torch-compile" in table and "to eager" in table and table.count("JAX speed-up") == 2


def _failing_compile(module):
    raise RuntimeError("InductorError: C++ compile error\nthe compiler's long output")


def test_a_compiler_failure_is_a_row_with_its_reason_not_a_crash(tiny_model, monkeypatch, capsys, load_script):
    monkeypatch.setattr(torch_reference, "compile_model", _failing_compile)
    model, variables = tiny_model
    results = inference_speed.benchmark_model(model, variables, 1, 32, 48, warmup=0, iterations=1,
                                              torch_model=_load_flax_weights(TinyTorchSegmenter(4), variables),
                                              torch_compile=True)
    failed = results[2]
    assert failed.framework == "torch-compile" and failed.error == "RuntimeError: InductorError: C++ compile error"
    assert math.isnan(failed.latency_ms_median) and math.isnan(failed.max_rel_diff)
    assert "torch-compile" in inference_speed.format_results(results)
    assert "failed: RuntimeError: InductorError: C++ compile error" in inference_speed.format_results(results)

    monkeypatch.setattr(torch_reference, "reference_model",
                        lambda config: TinyTorchSegmenter(config.model.num_classes, train_extras=True))
    row = train_speed.torch_compile_train_speed("bisenetv2", 2, 32, 32, num_classes=4, warmup=0, steps=1)
    assert row["error"] == "RuntimeError: InductorError: C++ compile error"
    assert math.isnan(row["step_seconds_median"]) and math.isnan(row["compile_seconds"])

    # The script prints it in its table, beside the other rows, and finishes.
    script = load_script("benchmark_train")
    def fake(framework):
        extra = {"xla_options": "XLA_FLAGS: (none)"} if framework == "jax" else {}
        return lambda *args, **kwargs: {**train_speed._result(framework, "bisenetv2", 2, 32, 32, "float32", [0.5], 1.0),
                                        **extra}

    monkeypatch.setattr(train_speed, "jax_train_speed", fake("jax"))
    monkeypatch.setattr(train_speed, "torch_train_speed", fake("torch"))
    assert script.main(["--model", "bisenetv2", "--batch-size", "2", "--crop", "32x32", "--torch-compile"]) == 0
    out = capsys.readouterr().out
    assert "torch-compile" in out and "failed: RuntimeError: InductorError: C++ compile error" in out
    assert "1.00x vs torch" in out and "inductor cache" in out
