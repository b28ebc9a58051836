"""Parity with the PyTorch implementation's own logits and state_dict keys (tests/reference)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bisenet_jax.convert.names import key_table, variables_from_state_dict
from bisenet_jax.models import create_model


@pytest.mark.parametrize("model_name,version", [("bisenetv1_r18", "v1"), ("bisenetv2", "v2")])
def test_golden_logits_match_pytorch(reference_dir, model_name, version, make_weights):
    state_dict = make_weights.weights(reference_dir / f"pytorch_bisenet{version}_state_dict.txt")
    golden = np.load(reference_dir / "golden" / f"golden_bisenet{version}.npz")
    x = jnp.asarray(golden["input_nchw"].transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(golden["input_nchw"], make_weights.golden_input())

    model = create_model(model_name, 19)
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    variables = variables_from_state_dict(state_dict, template)
    logits = np.asarray(model.apply(variables, x, train=False))
    expected = golden["logits_nchw"].transpose(0, 2, 3, 1)
    assert logits.shape == expected.shape == (1, 64, 96, 19)
    error = np.abs(logits - expected).max() / np.abs(expected).max()
    assert error < 1e-4, f"max |diff| / max |logits| = {error:.2e}"


@pytest.mark.parametrize("model_name,version,num_keys", [("bisenetv1_r18", "v1", 222), ("bisenetv2", "v2", 383)])
def test_key_table_is_the_pytorch_key_set(reference_dir, model_name, version, num_keys):
    lines = [l.rstrip("\n").split("\t") for l in open(reference_dir / f"pytorch_bisenet{version}_state_dict.txt")
             if l.strip() and not l.startswith("#")]
    reference = {k for k, _ in lines if not k.endswith("num_batches_tracked")}
    model = create_model(model_name, 19)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
    torch_keys = [k for _, k in key_table(variables)]
    assert len(torch_keys) == len(set(torch_keys))
    assert set(torch_keys) == reference
    assert len(lines) == num_keys
