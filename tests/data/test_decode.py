"""Decoding image and label files: OpenCV where it matches PIL, PIL otherwise, errors naming the file."""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from bisenet_jax.data import decode
from bisenet_jax.data.decode import ImageReadError, read_image, read_label


def test_file_that_is_not_an_image_is_named(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a png")
    with pytest.raises(ImageReadError, match=rf"cannot read {path}: cannot identify image file"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("kept", [0.5, 0.97])
def test_image_truncated_anywhere_is_an_error_naming_the_file(files, tmp_path, suffix, kept):
    """OpenCV returns None (no exception) for truncated files; read_image must still raise, naming
    the file, also for an in-memory file (ArrayRecord) under its record name."""
    path = files.write_image(tmp_path / f"a{suffix}", files.random_image(0, 48, 64))
    data = path.read_bytes()[: int(len(path.read_bytes()) * kept)]
    path.write_bytes(data)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB) is None
    with pytest.raises(ImageReadError, match=rf"cannot read {path}: image file is truncated.*re-download"):
        read_image(path)
    with pytest.raises(ImageReadError, match=r"cannot read shard-3\[7\] image: image file is truncated"):
        read_image(io.BytesIO(data), name="shard-3[7] image")


def test_missing_image_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"file not found: {tmp_path / 'gone.png'}"):
        read_image(tmp_path / "gone.png")


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P", "P+transparency", "1", "I;16"])
def test_images_are_decoded_by_opencv_with_pils_conversions(files, tmp_path, monkeypatch, mode):
    """The fast path (no PIL fallback) gives what the PIL path gives: grey replicated, alpha
    dropped, palette expanded, 16-bit samples reduced to their top 8 bits (truncated, not rounded)."""
    rgb = files.random_image(4, 9, 11)
    if mode == "I;16":
        values = np.random.default_rng(0).integers(0, 65536, (9, 11)).astype(np.uint16)
        values[0, :3] = (0x01FF, 0x0180, 0xFFFF)  # top bits 1, 1, 255
        pil = Image.fromarray(values)
        expected = np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    else:
        pil = Image.fromarray(rgb).convert(mode.split("+")[0])
        expected = None
    options = {"transparency": 2} if mode == "P+transparency" else {}
    path = tmp_path / "a.png"
    pil.save(path, **options)
    if expected is None:
        expected = np.asarray(Image.open(path).convert("RGB"))
    pil_path = decode._read_image_pil(io.BytesIO(path.read_bytes()), str(path))
    np.testing.assert_array_equal(pil_path, expected)

    def no_fallback(*args):
        raise AssertionError("read_image fell back to PIL")

    monkeypatch.setattr(decode, "_read_image_pil", no_fallback)
    image = read_image(path)
    assert image.shape == (9, 11, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, expected)
    if mode == "RGB":
        np.testing.assert_array_equal(image, rgb)  # RGB order, not OpenCV's BGR.


def test_jpeg_exif_orientation_is_not_applied(files, tmp_path):
    """Annotations are aligned with the stored pixels; cv2.imdecode would rotate by default."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display.
    path = tmp_path / "a.jpg"
    Image.fromarray(files.random_image(1, 10, 16)).save(path, exif=exif, quality=95)
    assert cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR_RGB).shape == (16, 10, 3)
    image = read_image(path)
    assert image.shape == (10, 16, 3)
    np.testing.assert_allclose(image, np.asarray(Image.open(path)), atol=1)


def test_opencv_runs_on_the_calling_thread(files, tmp_path, monkeypatch):
    """Once per process (grain workers included) the data pipeline sets cv2.setNumThreads(1)."""
    monkeypatch.setattr(decode, "_opencv_pid", None)  # As in a fresh process.
    cv2.setNumThreads(2)
    read_image(files.write_image(tmp_path / "a.png", files.random_image(0)))
    assert cv2.getNumThreads() == 1 and decode._opencv_pid == os.getpid()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK"])
def test_non_rgb_images_are_converted_to_rgb(files, tmp_path, mode):
    rgb = files.random_image(3)
    pil = Image.fromarray(rgb).convert(mode)
    path = tmp_path / ("a.jpg" if mode == "CMYK" else "a.png")
    pil.save(path)
    image = read_image(path)
    assert image.shape == (files.HEIGHT, files.WIDTH, 3) and image.dtype == np.uint8
    if mode == "CMYK":  # Lossy JPEG: only the shape is exact.
        return
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(image, expected)
    if mode in ("L", "LA"):  # Grey replicated to the three channels.
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()
    if mode == "RGBA":  # Colour kept, alpha dropped.
        np.testing.assert_array_equal(image, rgb)


def test_palette_label_keeps_its_indices(files, tmp_path):
    indices = files.label_with([0, 1, 2, 255])
    label = Image.fromarray(indices).convert("P")  # Same indices, then a palette of random colours.
    label.putpalette(np.random.default_rng(0).integers(0, 256, 768).tolist())
    label.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(read_label(tmp_path / "p.png"), indices)


def test_palette_label_is_not_given_to_opencv_which_would_expand_it(files, tmp_path):
    indices = files.label_with([0, 1, 2, 3])
    label = Image.fromarray(indices).convert("P")
    label.putpalette([value for index in range(256) for value in (index * 7 % 256, 200, 10)])
    label.save(tmp_path / "p.png")
    data = np.frombuffer((tmp_path / "p.png").read_bytes(), np.uint8)
    assert cv2.imdecode(data, cv2.IMREAD_UNCHANGED).shape == (files.HEIGHT, files.WIDTH, 3)  # colours
    assert not np.array_equal(cv2.imdecode(data, cv2.IMREAD_GRAYSCALE), indices)  # luma of the colours
    np.testing.assert_array_equal(read_label(tmp_path / "p.png"), indices)


def test_grey_png_labels_are_decoded_by_opencv_and_other_labels_by_pil(files, tmp_path, monkeypatch):
    ids = files.label_with([0, 1, 2, 255, 17])
    Image.fromarray(ids).save(tmp_path / "grey.png")
    Image.fromarray(ids).save(tmp_path / "grey_trns.png", transparency=1)  # tRNS: still plain ids
    Image.fromarray(ids).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(ids.astype(np.uint16)).save(tmp_path / "grey16.png")
    pil_decoded = []
    pil_reader = decode._read_label_pil
    monkeypatch.setattr(decode, "_read_label_pil", lambda *args: pil_decoded.append(args[1]) or pil_reader(*args))
    np.testing.assert_array_equal(read_label(tmp_path / "grey.png"), ids)
    np.testing.assert_array_equal(read_label(tmp_path / "grey_trns.png"), ids)
    np.testing.assert_array_equal(read_label(io.BytesIO((tmp_path / "grey.png").read_bytes()), name="in memory"), ids)
    assert pil_decoded == []
    np.testing.assert_array_equal(read_label(tmp_path / "palette.png"), ids)
    np.testing.assert_array_equal(read_label(tmp_path / "grey16.png"), ids)
    assert pil_decoded == [str(tmp_path / "palette.png"), str(tmp_path / "grey16.png")]


@pytest.mark.parametrize("kept", [0.3, 0.97])
def test_truncated_label_error_names_the_file(files, tmp_path, kept):
    path = files.write_image(tmp_path / "label.png", np.random.default_rng(0).integers(0, 19, (48, 64)))
    path.write_bytes(path.read_bytes()[: int(len(path.read_bytes()) * kept)])
    with pytest.raises(ImageReadError, match=rf"cannot read {path}: image file is truncated"):
        read_label(path)


def test_colour_label_is_refused_but_grey_rgb_label_is_read(files, tmp_path):
    files.write_image(tmp_path / "colour.png", files.random_image(0))
    with pytest.raises(ValueError, match="colour.png is a colour \\(RGB\\) image; labels must be single-channel id maps"):
        read_label(tmp_path / "colour.png")
    grey = files.label_with([0, 1, 2])
    files.write_image(tmp_path / "grey.png", np.repeat(grey[..., None], 3, axis=-1))
    np.testing.assert_array_equal(read_label(tmp_path / "grey.png"), grey)


def test_16_bit_label_beyond_255_is_refused(tmp_path):
    Image.fromarray(np.array([[0, 1], [2, 300]], np.uint16)).save(tmp_path / "l16.png")
    with pytest.raises(ValueError, match="l16.png holds I;16 values from 0 to 300"):
        read_label(tmp_path / "l16.png")
