"""scripts/export.py end to end, and its errors: each names the thing that is wrong."""
from __future__ import annotations

import re

import pytest

from bisenet_jax.checkpoints import save_model
from bisenet_jax.export import load_exported


@pytest.fixture(scope="module")
def export_main(load_script):
    return load_script("export").main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, models):
    return save_model(tmp_path_factory.mktemp("ckpt") / "v2", models.variables("bisenetv2"), model_name="bisenetv2",
                      num_classes=models.num_classes, dataset="demo")


def test_export_command_writes_the_file_and_reports_parity_with_jax(tmp_path, export_main, checkpoint, capsys):
    output = tmp_path / "v2.stablehlo"
    assert export_main(["--checkpoint", str(checkpoint), "--format", "stablehlo", "--output", str(output),
                        "--height", "64", "--width", "96"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "bisenetv2, 5 classes (demo), stablehlo, input 64x96" in out
    (error,) = re.findall(r"stablehlo vs JAX at 64x96: max \|diff\| / max \|logits\| = (\S+)", out)
    assert float(error) <= 1e-4
    info = load_exported(output).info
    assert (info.height, info.width, info.dataset, info.class_names[0]) == (64, 96, "demo", "background")


@pytest.mark.parametrize("output,arguments,message", [
    ("m.onnx", ["--format", "onnx", "--height", "16", "--width", "16"],
     r"unsupported input size 16x16: both sides must be at least 32"),
    ("m.tflite", ["--format", "onnx"], r"--output .*m\.tflite: a onnx file must end in \.onnx"),
    ("m.tflite", ["--format", "tflite", "--int8"], r"--int8 is implemented for ONNX only"),
    ("m.onnx", ["--format", "onnx", "--dataset", "camvid"], r"5 classes but dataset 'camvid' has 11"),
])
def test_bad_requests_fail_with_a_message_naming_the_problem(tmp_path, export_main, checkpoint, capsys,
                                                             output, arguments, message):
    assert export_main(["--checkpoint", str(checkpoint), "--output", str(tmp_path / output), *arguments]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / output).exists()


def test_checkpoint_without_a_model_name_is_refused(tmp_path, export_main, models, capsys):
    nameless = save_model(tmp_path / "nameless", models.variables("bisenetv2"), model_name=None,
                          num_classes=models.num_classes)
    assert export_main(["--checkpoint", str(nameless), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]) == 2
    assert "records no model name" in capsys.readouterr().err


def test_missing_checkpoint_is_named(tmp_path, export_main, capsys):
    missing = tmp_path / "no_such_run"
    assert export_main(["--checkpoint", str(missing), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]) == 2
    assert str(missing) in capsys.readouterr().err


def test_height_without_width_is_a_usage_error(export_main, checkpoint):
    with pytest.raises(SystemExit) as exit_info:
        export_main(["--checkpoint", str(checkpoint), "--format", "onnx", "--output", "m.onnx", "--height", "64"])
    assert exit_info.value.code == 2
