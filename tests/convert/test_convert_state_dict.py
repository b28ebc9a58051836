"""JAX variables <-> PyTorch state_dict without torch: key layout, round trips, errors, files."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from flax import traverse_util

from bisenet_jax.convert import (from_torch_state_dict, guess_model_name, load_torch_checkpoint,
                                 num_classes_from_state_dict, read_safetensors_metadata, save_torch_checkpoint,
                                 to_torch_state_dict, unwrap_state_dict)

MODELS = [("bisenetv1_r18", "v1"), ("bisenetv2", "v2")]


def _assert_same_variables(a, b):
    flat_a, flat_b = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
    assert flat_a.keys() == flat_b.keys()
    for path in flat_a:
        np.testing.assert_array_equal(np.asarray(flat_a[path]), np.asarray(flat_b[path]), err_msg=str(path))


@pytest.mark.parametrize("model_name,version", MODELS)
def test_exported_state_dict_has_exactly_the_reference_keys_and_shapes(model_name, version, random_variables,
                                                                       reference_shapes):
    state_dict = to_torch_state_dict(random_variables(model_name), model_name)
    assert {k: tuple(v.shape) for k, v in state_dict.items()} == reference_shapes(version)
    counters = {k: v for k, v in state_dict.items() if k.endswith("num_batches_tracked")}
    assert counters and all(v.dtype == np.int64 and v.shape == () for v in counters.values())
    assert all(v.dtype == np.float32 for k, v in state_dict.items() if k not in counters)


def test_exported_values_are_the_variables_in_pytorch_layout(random_variables):
    variables = random_variables("bisenetv1_r18")
    state_dict = to_torch_state_dict(variables, "bisenetv1_r18")
    kernel = variables["params"]["cp"]["resnet"]["layer2"]["0"]["conv1"]["kernel"]  # HWIO (3, 3, 64, 128)
    np.testing.assert_array_equal(state_dict["cp.resnet.layer2.0.conv1.weight"], kernel.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(state_dict["ffm.bn.running_var"], variables["batch_stats"]["ffm"]["bn"]["var"])
    np.testing.assert_array_equal(state_dict["ffm.bn.weight"], variables["params"]["ffm"]["bn"]["scale"])


@pytest.mark.parametrize("model_name,version", MODELS)
def test_round_trip_jax_to_torch_to_jax_is_exact(model_name, version, random_variables):
    variables = random_variables(model_name, num_classes=11)
    state_dict = to_torch_state_dict(variables, model_name)
    assert num_classes_from_state_dict(state_dict, model_name) == 11
    _assert_same_variables(from_torch_state_dict(state_dict, model_name), variables)


@pytest.mark.parametrize("model_name", ["bisenetv1_r34", "bisenetv1_r50", "bisenetv1_x39"])
def test_other_backbones_round_trip_and_are_recognised(model_name, random_variables):
    variables = random_variables(model_name)
    state_dict = to_torch_state_dict(variables, model_name)
    assert guess_model_name(state_dict) == model_name
    _assert_same_variables(from_torch_state_dict(state_dict), variables)  # model detected from the keys


def test_deployment_export_drops_the_auxiliary_heads(random_variables, reference_shapes):
    state_dict = to_torch_state_dict(random_variables("bisenetv2"), "bisenetv2", aux_heads=False)
    reference = reference_shapes("v2")
    expected = {k for k in reference if not k.startswith(("aux2.", "aux3.", "aux4.", "aux5_4."))}
    assert set(state_dict) == expected
    variables = from_torch_state_dict(state_dict, "bisenetv2")
    assert "aux2" not in variables["params"] and "head" in variables["params"]


def test_wrapped_and_dataparallel_checkpoints_are_unwrapped(random_variables):
    variables = random_variables("bisenetv1_r18")
    state_dict = to_torch_state_dict(variables, "bisenetv1_r18")
    wrapped = {"epoch": 3, "optimizer": {"lr": 0.1},
               "state_dict": {f"module.{k}": v for k, v in state_dict.items()}}
    assert set(unwrap_state_dict(wrapped)) == set(state_dict)
    _assert_same_variables(from_torch_state_dict(wrapped, "bisenetv1_r18"), variables)
    _assert_same_variables(from_torch_state_dict({"model": state_dict}), variables)


def test_checkpoint_without_a_state_dict_is_rejected_with_its_keys():
    with pytest.raises(ValueError, match=r"cannot find a state_dict.*'epoch'.*'optimizer'"):
        unwrap_state_dict({"epoch": 3, "optimizer": {"lr": 0.1}})


# --- mismatch errors ---------------------------------------------------------------------------


@pytest.fixture
def v1_state_dict(random_variables):
    return to_torch_state_dict(random_variables("bisenetv1_r18"), "bisenetv1_r18")


def test_missing_keys_are_listed(v1_state_dict):
    del v1_state_dict["ffm.bn.running_mean"], v1_state_dict["sp.conv1.conv.weight"]
    with pytest.raises(ValueError, match=r"missing keys \(2\):\n  ffm\.bn\.running_mean\n  sp\.conv1\.conv\.weight"):
        from_torch_state_dict(v1_state_dict, "bisenetv1_r18")


def test_unexpected_keys_are_listed(v1_state_dict):
    v1_state_dict["ffm.extra.weight"] = np.zeros((4,), np.float32)
    v1_state_dict["ffm.extra.num_batches_tracked"] = np.array(0)
    with pytest.raises(ValueError, match=r"unexpected keys \(2\):\n  ffm\.extra\.num_batches_tracked\n  ffm\.extra\.weight"):
        from_torch_state_dict(v1_state_dict, "bisenetv1_r18")


def test_mis_shaped_keys_are_listed_with_both_shapes(v1_state_dict):
    v1_state_dict["cp.arm16.conv.conv.weight"] = np.zeros((128, 255, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"mis-shaped keys \(1\):\n  cp\.arm16\.conv\.conv\.weight: "
                                         r"got \(128, 255, 3, 3\), expected \(128, 256, 3, 3\)"):
        from_torch_state_dict(v1_state_dict, "bisenetv1_r18")


def test_old_ffm_layout_is_named_in_the_error(v1_state_dict):
    for key in [k for k in v1_state_dict if k.startswith(("ffm.conv.", "ffm.bn."))]:
        del v1_state_dict[key]
    v1_state_dict["ffm.conv1.weight"] = np.zeros((64, 256, 1, 1), np.float32)
    v1_state_dict["ffm.conv2.weight"] = np.zeros((256, 64, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"old-layout BiSeNetV1 checkpoint.*'ffm\.conv1\.weight' \(64, 256, 1, 1\)"
                                         r".*'ffm\.conv2\.weight' \(256, 64, 1, 1\).*current layout, "
                                         r"'ffm\.conv\.weight' \(256, 256, 1, 1\)"):
        from_torch_state_dict(v1_state_dict, "bisenetv1_r18")


def test_wrong_model_name_error_names_the_model_the_keys_fit(random_variables):
    state_dict = to_torch_state_dict(random_variables("bisenetv1_r50"), "bisenetv1_r50")
    with pytest.raises(ValueError, match=r"(?s)look like a 'bisenetv1_r50' checkpoint, not 'bisenetv1_r18'.*mis-shaped keys"):
        from_torch_state_dict(state_dict, "bisenetv1_r18")


def test_exporting_variables_of_another_model_fails(random_variables):
    with pytest.raises(ValueError, match=r"(?s)variables are not those of 'bisenetv1_r34'.*missing keys"):
        to_torch_state_dict(random_variables("bisenetv1_r18"), "bisenetv1_r34")


# --- files ---------------------------------------------------------------------------------------


def test_safetensors_round_trip_keeps_values_dtypes_and_metadata(tmp_path, v1_state_dict):
    pytest.importorskip("safetensors")
    path = save_torch_checkpoint(v1_state_dict, tmp_path / "model.safetensors", {"model_name": "bisenetv1_r18"})
    loaded = load_torch_checkpoint(path)
    assert loaded.keys() == v1_state_dict.keys()
    for key, value in v1_state_dict.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape
        np.testing.assert_array_equal(loaded[key], value)
    assert read_safetensors_metadata(path) == {"format": "pt", "model_name": "bisenetv1_r18"}


def test_unknown_file_suffix_and_missing_file_are_reported(tmp_path, v1_state_dict):
    with pytest.raises(ValueError, match=r"model\.npz: unknown checkpoint format '\.npz'"):
        save_torch_checkpoint(v1_state_dict, tmp_path / "model.npz")
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_torch_checkpoint(tmp_path / "nothing.pth")


def test_importing_the_package_does_not_import_torch():
    code = ("import sys, bisenet_jax, bisenet_jax.convert, bisenet_jax.convert.state_dict; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_requiring_auxiliary_heads_from_a_deployment_export_says_so(random_variables):
    state_dict = to_torch_state_dict(random_variables("bisenetv2"), "bisenetv2", aux_heads=False)
    with pytest.raises(ValueError, match=r"(?s)no auxiliary heads.*aux_heads=False.*missing keys \(\d+\):\n  aux2\."):
        from_torch_state_dict(state_dict, "bisenetv2", aux_heads=True)
