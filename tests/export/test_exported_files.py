"""Reading exported files: the metadata round trip, input checks, and corrupt or foreign files."""
from __future__ import annotations

import zipfile

import pytest

from bisenet_jax.export import ExportError, ExportInfo, load_exported

INFO = ExportInfo(model_name="bisenetv2", num_classes=2, format="onnx", dataset="demo", class_names=("a", "b, c"),
                  mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), palette=((0, 0, 0), (255, 0, 0)))


def test_metadata_round_trips_through_onnx_props_and_json():
    props = INFO.to_string_props()
    assert props["model_name"] == "bisenetv2" and props["num_classes"] == "2"  # readable as they are
    assert ExportInfo.from_string_props(props, "m.onnx") == INFO  # class names may hold commas
    assert ExportInfo.from_json(INFO.to_json(), "m.tflite") == INFO


def test_metadata_without_a_model_name_says_which_file():
    with pytest.raises(ExportError, match=r"other\.onnx: the bisenet_jax metadata has no model_name"):
        ExportInfo.from_string_props({"producer": "someone else"}, "other.onnx")


@pytest.mark.parametrize("info,shape,message", [
    (INFO, (1, 16, 64, 3), r"input 16x64 is too small; both sides must be at least 32"),
    (ExportInfo("bisenetv2", 2, "tflite", height=64, width=96), (1, 96, 64, 3), r"exported for 64x96 inputs, got 96x64"),
    (ExportInfo("bisenetv2", 2, "tflite", multiple_of=32), (1, 100, 128, 3), r"multiples of 32, got 100x128"),
    (INFO, (1, 64, 64), r"expected an NHWC batch of RGB images"),
])
def test_inputs_the_model_cannot_take_are_refused_by_name(info, shape, message):
    with pytest.raises(ExportError, match=message):
        info.check_input(shape, "model.file")


@pytest.mark.parametrize("suffix", [".onnx", ".tflite", ".stablehlo"])
def test_corrupt_files_are_reported_with_their_path(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"this is not a model" * 10)
    with pytest.raises(ExportError, match=rf"broken\{suffix}: "):
        load_exported(path)


def test_a_zip_that_is_not_a_stablehlo_archive_is_named(tmp_path):
    path = tmp_path / "other.stablehlo"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ExportError, match=r"not a bisenet_jax StableHLO archive, it has no metadata.json, model.jax_exported"):
        load_exported(path)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(ExportError, match=r"unknown exported-model suffix '\.pt'"):
        load_exported(tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="no exported model at"):
        load_exported(tmp_path / "model.onnx")
