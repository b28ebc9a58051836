"""scripts/convert.py: JAX checkpoint <-> .pth / .safetensors, and ONNX, end to end on disk."""
from __future__ import annotations

import numpy as np
import pytest
from flax import traverse_util

from bisenet_jax.checkpoints import load_model, save_model
from bisenet_jax.convert import load_torch_checkpoint, read_safetensors_metadata, to_torch_state_dict


@pytest.fixture(scope="module")
def convert_main(load_script):
    return load_script("convert").main


@pytest.fixture
def jax_checkpoint(tmp_path, random_variables):
    variables = random_variables("bisenetv2", num_classes=11, seed=9)
    path = save_model(tmp_path / "jax_model", variables, model_name="bisenetv2", num_classes=11, dataset="camvid")
    return path, variables


def _assert_same(a, b):
    flat_a, flat_b = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(np.asarray(flat_a[key]), np.asarray(flat_b[key]), err_msg=str(key))


def test_safetensors_round_trip_through_the_cli(tmp_path, convert_main, jax_checkpoint):
    pytest.importorskip("safetensors")
    checkpoint, variables = jax_checkpoint
    torch_file = tmp_path / "v2.safetensors"
    assert convert_main(["to-torch", "--checkpoint", str(checkpoint), "--output", str(torch_file)]) == 0
    assert read_safetensors_metadata(torch_file) == {
        "format": "pt", "model_name": "bisenetv2", "num_classes": "11", "dataset": "camvid"}
    assert set(load_torch_checkpoint(torch_file)) == set(to_torch_state_dict(variables, "bisenetv2"))

    assert convert_main(["from-torch", "--input", str(torch_file), "--output", str(tmp_path / "back")]) == 0
    back, info = load_model(tmp_path / "back")  # what training and evaluation read
    assert (info["model_name"], info["num_classes"], info["dataset"]) == ("bisenetv2", 11, "camvid")
    _assert_same(back, variables)


def test_pth_round_trip_through_the_cli_detects_the_model(tmp_path, convert_main, jax_checkpoint):
    pytest.importorskip("torch")
    checkpoint, variables = jax_checkpoint
    torch_file = tmp_path / "v2.pth"
    assert convert_main(["to-torch", "--checkpoint", str(checkpoint), "--output", str(torch_file), "--no-aux-heads"]) == 0
    assert not any(k.startswith("aux") for k in load_torch_checkpoint(torch_file))
    assert convert_main(["from-torch", "--input", str(torch_file), "--output", str(tmp_path / "back"),
                         "--dataset", "camvid"]) == 0
    back, info = load_model(tmp_path / "back")
    assert (info["model_name"], info["num_classes"], info["dataset"]) == ("bisenetv2", 11, "camvid")
    without_aux = {c: {k: v for k, v in variables[c].items() if not k.startswith("aux")} for c in variables}
    _assert_same(back, without_aux)


def test_cli_reports_an_old_layout_checkpoint(tmp_path, convert_main, random_variables, capsys):
    state_dict = to_torch_state_dict(random_variables("bisenetv1_r18"), "bisenetv1_r18")
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(("ffm.conv.", "ffm.bn."))}
    state_dict["ffm.conv1.weight"] = np.zeros((64, 256, 1, 1), np.float32)
    state_dict["ffm.conv2.weight"] = np.zeros((256, 64, 1, 1), np.float32)
    from bisenet_jax.convert import save_torch_checkpoint
    pytest.importorskip("safetensors")
    path = save_torch_checkpoint(state_dict, tmp_path / "old.safetensors")
    assert convert_main(["from-torch", "--input", str(path), "--output", str(tmp_path / "out")]) == 2
    assert "old-layout BiSeNetV1 checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_onnx_command_exports_and_checks_against_jax(tmp_path, convert_main, jax_checkpoint, capsys):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    checkpoint, _ = jax_checkpoint
    output = tmp_path / "v2.onnx"
    assert convert_main(["onnx", "--checkpoint", str(checkpoint), "--output", str(output),
                         "--height", "64", "--width", "96"]) == 0
    assert "onnxruntime vs JAX: max |diff| / max |logits| = " in capsys.readouterr().out
    props = {p.key: p.value for p in onnx.load(str(output)).metadata_props}
    assert props["model_name"] == "bisenetv2" and props["num_classes"] == "11" and props["dataset"] == "camvid"
    assert len(props["class_names"].split(",")) == 11 and len(props["mean"].split(",")) == 3
