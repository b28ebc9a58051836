"""The shipped PyTorch modules against the JAX models: strict loading, logits parity both ways,
torchvision backbones, .pth files."""
from __future__ import annotations

import numpy as np
import pytest
from flax import traverse_util

torch = pytest.importorskip("torch")

from bisenet_jax.convert import (from_torch_state_dict, load_torch_checkpoint, load_torchvision_backbone,
                                 save_torch_checkpoint, to_torch_state_dict)
from bisenet_jax.convert.torch_models import build_torch_model, build_torchvision_resnet, count_parameters
from bisenet_jax.models.resnet import ResNet

MODELS = [("bisenetv1_r18", "v1"), ("bisenetv2", "v2")]
AUX_PREFIXES = ("conv_out16.", "conv_out32.", "aux2.", "aux3.", "aux4.", "aux5_4.")


def _randomise_torch(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN affine parameters and running statistics, random conv biases (none is trivial)."""
    generator = torch.Generator().manual_seed(seed)
    randn = lambda t: torch.randn(t.shape, generator=generator)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(1 + 0.2 * randn(module.weight))
                module.bias.copy_(0.1 * randn(module.bias))
                module.running_mean.copy_(0.1 * randn(module.running_mean))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
            elif isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                module.bias.copy_(0.1 * randn(module.bias))
    return model


def _images(height: int, width: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, height, width, 3)).astype(np.float32)


def _torch_eval_logits(model: torch.nn.Module, images_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("model_name,version,with_aux,without_aux", [
    ("bisenetv1_r18", "v1", 13_425_721, 13_275_539), ("bisenetv2", "v2", 5_231_487, 3_358_627)])
def test_torch_model_has_the_reference_layout_and_parameter_counts(model_name, version, with_aux, without_aux,
                                                                   reference_shapes):
    model = build_torch_model(model_name, 19)
    reference = reference_shapes(version)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == reference
    assert list(model.state_dict()) == list(reference)  # same order too
    deploy = build_torch_model(model_name, 19, aux_heads=False)
    assert set(deploy.state_dict()) == {k for k in reference if not k.startswith(AUX_PREFIXES)}
    assert (count_parameters(model), count_parameters(deploy)) == (with_aux, without_aux)


@pytest.mark.parametrize("model_name,num_aux", [("bisenetv1_r18", 2), ("bisenetv2", 4)])
def test_export_loads_strictly_into_the_training_mode_model(model_name, num_aux, random_variables):
    variables = random_variables(model_name, num_classes=7)
    model = build_torch_model(model_name, 7)
    assert model.training
    model.load_state_dict(to_torch_state_dict(variables, model_name, as_torch=True), strict=True)
    with torch.no_grad():
        logits, aux = model(torch.zeros(2, 3, 64, 96))
    assert logits.shape == (2, 7, 64, 96)
    assert [tuple(a.shape) for a in aux] == [(2, 7, 64, 96)] * num_aux


@pytest.mark.parametrize("size", [(384, 480), (512, 1024)], ids=["384x480", "512x1024"])
@pytest.mark.parametrize("model_name", ["bisenetv1_r18", "bisenetv2"])
def test_jax_model_exported_to_torch_gives_the_same_logits(model_name, size, random_variables, jax_logits, rel_error):
    variables = random_variables(model_name, seed=3)
    model = build_torch_model(model_name, 19)
    model.load_state_dict(to_torch_state_dict(variables, model_name, as_torch=True), strict=True)
    images = _images(*size)
    expected = jax_logits(model_name, variables, images)
    assert rel_error(_torch_eval_logits(model, images), expected) < 1e-4


@pytest.mark.parametrize("size", [(384, 480), (512, 1024)], ids=["384x480", "512x1024"])
@pytest.mark.parametrize("model_name", ["bisenetv1_r18", "bisenetv2"])
def test_torch_model_imported_to_jax_gives_the_same_logits(model_name, size, jax_logits, rel_error):
    torch.manual_seed(5)
    model = _randomise_torch(build_torch_model(model_name, 19), seed=5)
    variables = from_torch_state_dict(model.state_dict(), model_name)
    images = _images(*size, seed=2)
    assert rel_error(jax_logits(model_name, variables, images), _torch_eval_logits(model, images)) < 1e-4


@pytest.mark.parametrize("model_name", ["bisenetv1_r18", "bisenetv2"])
def test_sides_not_multiple_of_32_give_the_same_logits(model_name, random_variables, jax_logits, rel_error):
    variables = random_variables(model_name, seed=4)
    model = build_torch_model(model_name, 19)
    model.load_state_dict(to_torch_state_dict(variables, model_name, as_torch=True), strict=True)
    images = _images(100, 140)  # features 50x70 -> ... -> 4x5: every skip resize is non-integer
    assert rel_error(_torch_eval_logits(model, images), jax_logits(model_name, variables, images)) < 1e-4


@pytest.mark.parametrize("model_name", ["bisenetv1_r50", "bisenetv1_x39"])
def test_bottleneck_and_xception_backbones_give_the_same_logits(model_name, random_variables, jax_logits, rel_error):
    variables = random_variables(model_name, seed=3)
    model = build_torch_model(model_name, 19)
    model.load_state_dict(to_torch_state_dict(variables, model_name, as_torch=True), strict=True)
    images = _images(64, 96)
    assert rel_error(_torch_eval_logits(model, images), jax_logits(model_name, variables, images)) < 1e-4


# --- torchvision ImageNet backbones -------------------------------------------------------------


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_resnet_weights_give_the_same_backbone_features(depth, random_variables, rel_error):
    torch.manual_seed(depth)
    resnet = _randomise_torch(build_torchvision_resnet(depth), seed=depth).eval()
    state_dict = resnet.state_dict()
    assert {"fc.weight", "fc.bias", "layer4.1.bn2.num_batches_tracked"} <= set(state_dict)
    variables = random_variables(f"bisenetv1_r{depth}")
    loaded = load_torchvision_backbone(variables, state_dict)

    images = _images(128, 160)
    with torch.no_grad():
        expected = [f.numpy().transpose(0, 2, 3, 1) for f in resnet(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))]
    backbone = {c: loaded[c]["cp"]["resnet"] for c in ("params", "batch_stats")}
    features = ResNet(depth).apply(backbone, images, train=False)
    assert [f.shape[1:3] for f in features] == [(16, 20), (8, 10), (4, 5)]  # 1/8, 1/16, 1/32
    for got, want in zip(features, expected):
        assert rel_error(np.asarray(got), want) < 1e-4
    # Everything outside the backbone is untouched.
    np.testing.assert_array_equal(loaded["params"]["ffm"]["conv"]["kernel"], variables["params"]["ffm"]["conv"]["kernel"])
    np.testing.assert_array_equal(loaded["batch_stats"]["sp"]["conv1"]["bn"]["var"],
                                  variables["batch_stats"]["sp"]["conv1"]["bn"]["var"])


def test_torchvision_weights_of_another_depth_are_rejected(random_variables):
    state_dict = build_torchvision_resnet(50).state_dict()
    with pytest.raises(ValueError, match=r"(?s)ResNet-50, the model's backbone a ResNet-18.*unexpected keys"):
        load_torchvision_backbone(random_variables("bisenetv1_r18"), state_dict)
    with pytest.raises(ValueError, match=r"no ResNet context path"):
        load_torchvision_backbone(random_variables("bisenetv2"), state_dict)


# --- .pth files ---------------------------------------------------------------------------------


def test_pth_round_trip_loads_in_torch_and_back_in_jax(tmp_path, random_variables):
    variables = random_variables("bisenetv2", num_classes=11)
    path = save_torch_checkpoint(to_torch_state_dict(variables, "bisenetv2"), tmp_path / "model.pth")
    model = build_torch_model("bisenetv2", 11)
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)  # what a PyTorch user does
    back = from_torch_state_dict(load_torch_checkpoint(path))  # model and classes from the keys
    flat_back, flat = traverse_util.flatten_dict(back), traverse_util.flatten_dict(variables)
    assert flat_back.keys() == flat.keys()
    assert all(np.array_equal(flat_back[k], flat[k]) for k in flat)


def test_exported_file_loads_as_a_ready_torch_model(tmp_path, random_variables, jax_logits, rel_error):
    pytest.importorskip("safetensors")
    from bisenet_jax.convert.torch_models import load_torch_model
    variables = random_variables("bisenetv1_r18", num_classes=5, seed=6)
    path = save_torch_checkpoint(to_torch_state_dict(variables, "bisenetv1_r18", aux_heads=False),
                                 tmp_path / "deploy.safetensors")
    model = load_torch_model(path)  # model from the keys, classes from the classifier
    assert not model.training and not hasattr(model, "conv_out16")
    images = _images(64, 96)
    assert rel_error(_torch_eval_logits(model, images), jax_logits("bisenetv1_r18", variables, images)) < 1e-4


def test_half_precision_torch_checkpoints_import_as_float32(random_variables):
    variables = random_variables("bisenetv2", seed=8)
    state_dict = to_torch_state_dict(variables, "bisenetv2", as_torch=True)
    halved = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state_dict.items()}
    back = from_torch_state_dict(halved, "bisenetv2")
    kernel = back["params"]["head"]["conv_out"]["1"]["kernel"]
    assert kernel.dtype == np.float32
    np.testing.assert_allclose(kernel, variables["params"]["head"]["conv_out"]["1"]["kernel"], rtol=1e-2, atol=1e-3)


class _NotATensor:
    pass


def test_pth_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "full_model.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _NotATensor()}, path)
    with pytest.raises(ValueError, match=r"refusing to load it with weights_only=False"):
        load_torch_checkpoint(path)


@pytest.mark.parametrize("model_name,version", MODELS)
def test_torch_model_reproduces_the_reference_implementations_golden_logits(model_name, version, reference_dir,
                                                                            rel_error, make_weights):
    weights = make_weights.weights(reference_dir / f"pytorch_bisenet{version}_state_dict.txt")
    golden = np.load(reference_dir / "golden" / f"golden_bisenet{version}.npz")
    model = build_torch_model(model_name, 19)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=True)
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(golden["input_nchw"])).numpy()
    assert rel_error(logits, golden["logits_nchw"]) < 1e-4


@pytest.mark.parametrize("model_name", ["bisenetv1_r18", "bisenetv1_x39", "bisenetv2"])
def test_a_fresh_jax_model_draws_its_weights_from_the_reference_initialisation(model_name):
    """Training from scratch starts where the PyTorch reference starts (the CamVid race compares the two):
    for every state-dict entry the JAX initialisation, converted, has the reference's constant values
    (BatchNorm ones and zeros, biases, statistics) or, for a random tensor of 1,000+ values, its mean
    (within 6 / sqrt(n) standard deviations) and its standard deviation (within 10%; a wrong fan mode or
    gain changes it by 40% or more; the X39 backbone differed by sqrt(3) until session 16)."""
    import jax
    import jax.numpy as jnp

    from bisenet_jax.models import create_model, init_variables

    variables = init_variables(create_model(model_name, 11), 0)
    ours = to_torch_state_dict(jax.device_get(variables), model_name)
    torch.manual_seed(0)
    reference = build_torch_model(model_name, 11, aux_heads=True).state_dict()
    assert ours.keys() == reference.keys()
    compared = 0
    for key, value in reference.items():
        want, got = value.numpy().astype(np.float64), np.asarray(ours[key], np.float64)
        assert got.shape == want.shape, key
        if want.size == 0 or np.all(want == want.ravel()[0]):
            np.testing.assert_array_equal(got, want, err_msg=key)
        elif want.size >= 1000:
            # two draws of n values: their means differ by ~sqrt(2 / n) standard deviations
            assert abs(got.mean() - want.mean()) < 6 * want.std() / np.sqrt(want.size), (key, got.mean(), want.mean())
            assert got.std() == pytest.approx(want.std(), rel=0.1), key
            compared += 1
    assert compared > 20
