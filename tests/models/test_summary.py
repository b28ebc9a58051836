"""bisenet_jax.models.summary: parameter counts, the parameter table, XLA FLOPs, the stats script."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from bisenet_jax.models import create_model
from bisenet_jax.models.summary import (count_params, flops, format_stats_table, model_stats, model_summary,
                                        module_flops, parameter_table)


class TwoLayers(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (3, 3), padding="VALID", use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, name="bn")(x)
        return nn.Dense(5, name="head")(x.mean(axis=(1, 2)))


def _shapes(model, x_shape):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x_shape)))


def test_count_params_counts_params_not_batch_stats():
    variables = _shapes(TwoLayers(), (1, 32, 32, 4))
    # conv 3*3*4*8 = 288, bn scale+bias 16, dense 8*5+5 = 45; BN mean/var are not parameters
    assert count_params(variables) == 288 + 16 + 45
    assert count_params(variables["params"]) == 349


def test_parameter_table_lists_every_parameter_with_subtotals():
    table = parameter_table(_shapes(TwoLayers(), (1, 32, 32, 4)))
    lines = table.splitlines()
    assert any(l.startswith("conv/kernel") and "(3, 3, 4, 8)" in l and l.rstrip().endswith("288") for l in lines)
    assert any("head subtotal" in l and l.rstrip().endswith("45") for l in lines)
    assert any("bn subtotal" in l and l.rstrip().endswith("16") for l in lines)
    assert lines[-2].startswith("total") and lines[-2].rstrip().endswith("349")
    assert "16 BatchNorm statistics" in lines[-1]


def test_parameter_table_of_bisenet_totals_the_pytorch_count():
    model = create_model("bisenetv1_r18", 19)
    table = parameter_table(_shapes(model, (1, 64, 64, 3)), depth=2)
    assert "13,425,721" in table.splitlines()[-2]
    cp_subtotal = next(l for l in table.splitlines() if "cp subtotal" in l)
    assert cp_subtotal.rstrip().endswith("12,456,256")
    resnet_row = next(l for l in table.splitlines() if l.startswith("cp/resnet "))
    assert resnet_row.rstrip().endswith("11,176,512")  # torchvision resnet18 minus its fc


def test_flops_of_a_valid_convolution_is_two_per_multiply_add():
    conv = nn.Conv(8, (3, 3), padding="VALID", use_bias=False)
    variables = _shapes(conv, (1, 32, 32, 4))

    class Wrapped(nn.Module):  # flops() calls apply(..., train=False) like the BiSeNets
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Conv(8, (3, 3), padding="VALID", use_bias=False, name="conv")(x)

    variables = {"params": {"conv": variables["params"]}}
    assert flops(Wrapped(), variables, (1, 32, 32, 4)) == 2 * 30 * 30 * 3 * 3 * 4 * 8


def test_module_flops_add_up_to_the_compiled_total():
    model = create_model("bisenetv1_x39", 19)
    variables = _shapes(model, (1, 64, 96, 3))
    per_module = module_flops(model, variables, (1, 64, 96, 3))
    assert list(per_module) == ["cp", "sp", "ffm", "conv_out", "conv_out16", "conv_out32"]  # call order
    assert [name for name, (_, training_only) in per_module.items() if training_only] == ["conv_out16", "conv_out32"]
    eval_sum = sum(cost for cost, training_only in per_module.values() if not training_only)
    total = flops(model, variables, (1, 64, 96, 3))
    assert eval_sum == pytest.approx(total, rel=0.02)
    # The spatial path's convolutions alone (7x7 3->64 at 1/2, 3x3 64->64 at 1/4 and 1/8, 1x1 64->128),
    # padding taps excluded by XLA, are a lower bound of its cost: 2 FLOPs per multiply-add.
    assert per_module["sp"][0] > 2 * (32 * 48 * 3 * 64 * 45 + 16 * 24 * 64 * 64 * 8 + 8 * 12 * 64 * 128)


@pytest.mark.parametrize("name", ["bisenetv1_x39", "bisenetv2"])
def test_flops_count_xla_convolutions_whatever_the_model_kernels(name):
    """The CPU kernels (depthwise as shifted sums, the sliced max pool) would count other FLOPs:
    ``flops`` and ``module_flops`` cost the model with XLA's own ops on every backend."""
    cpu_model, xla_model = create_model(name, 19, kernels="cpu"), create_model(name, 19, kernels="xla")
    variables = _shapes(cpu_model, (1, 64, 64, 3))
    assert flops(cpu_model, variables, (1, 64, 64, 3)) == flops(xla_model, variables, (1, 64, 64, 3))
    assert module_flops(cpu_model, variables, (1, 64, 64, 3)) == module_flops(xla_model, variables, (1, 64, 64, 3))


def test_model_summary_table():
    summary = model_summary("bisenetv2", 19, (1, 64, 64, 3))
    lines = summary.splitlines()
    assert lines[0].startswith("bisenetv2, 19 classes, input (1, 64, 64, 3)")
    rows = {l.split()[0]: l for l in lines[3:] if l and l.split()[0] in {"detail", "segment", "bga", "head", "aux2"}}
    assert set(rows) == {"detail", "segment", "bga", "head", "aux2"}
    assert "training only" in rows["aux2"] and "training only" not in rows["head"]
    assert rows["detail"].split()[1] == "519,232"
    assert next(l for l in lines if l.startswith("eval total")).split()[2] == "3,358,627"
    assert next(l for l in lines if l.startswith("with aux")).split()[2] == "5,231,487"


def test_model_stats_rows_and_markdown_table():
    rows = model_stats(["bisenetv1_x39"], 360, 640)
    assert rows[0]["params"] == 1_777_265 and rows[0]["params_eval"] == 1_476_939
    # XLA's count at 640x360 (regression value): 6.59 GFLOPs, i.e. 3.30 GMACs vs the paper's 2.9
    assert rows[0]["flops"] / 1e9 == pytest.approx(6.59, abs=0.05)
    table = format_stats_table(rows, 360, 640)
    assert table.splitlines()[2].startswith("| bisenetv1_x39 | 1.78 | 1.48 | 6.59 | 3.30 | 5.8 | 2.9 |")


def test_model_stats_script_prints_the_table(capsys, load_script):
    script = load_script("model_stats")
    script.main(["--height", "64", "--width", "96", "--models", "bisenetv1_x39"])
    out = capsys.readouterr().out
    assert "| model (96x64) |" in out
    row = next(l for l in out.splitlines() if l.startswith("| bisenetv1_x39 |"))
    assert row.startswith("| bisenetv1_x39 | 1.78 | 1.48 |")
    assert row.endswith("| - | - |")  # the paper's figures are for 640x360 only
    assert "GMACs = GFLOPs / 2" in out
