"""Prediction over a folder and over a short generated video: files written, palette colours."""
from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

from bisenet_jax.data.info import make_dataset_info
from bisenet_jax.evaluation import predict

# The tests start ffmpeg themselves (fork + exec, no JAX in the child).
pytestmark = pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning")

PALETTE = np.array([(200, 10, 10), (10, 200, 10), (10, 10, 200), (250, 250, 0)], np.uint8)


@pytest.fixture(scope="module")
def predictor(tiny_model):
    model, variables = tiny_model
    info = make_dataset_info("tiny", 4, palette=PALETTE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return predict.Predictor(model, variables, info, batch_size=2)


def smooth_image(seed, height=48, width=64):
    """Gradients plus a blob: predictions with regions rather than per-pixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width] / max(height, width)
    channels = [np.sin(6 * a * yy + 5 * b * xx + c) for a, b, c in rng.uniform(-1, 1, (3, 3))]
    return np.clip(127.5 + 120 * np.stack(channels, -1), 0, 255).astype(np.uint8)


def test_colorize_uses_the_palette_and_black_for_ignored_ids():
    labels = np.array([[0, 3], [255, 1]])
    np.testing.assert_array_equal(predict.colorize(labels, PALETTE),
                                  [[PALETTE[0], PALETTE[3]], [(0, 0, 0), PALETTE[1]]])


def test_predictor_normalises_with_the_dataset_mean_and_std(tiny_model, predictor):
    model, variables = tiny_model
    image = smooth_image(0)
    normalised = (image.astype(np.float32) / 255 - 0.5) / 0.25
    expected = np.argmax(np.asarray(model.apply(variables, normalised[None])), -1)
    np.testing.assert_array_equal(predictor(image[None]), expected)


def test_predict_folder_writes_label_color_and_overlay_pngs(tmp_path, predictor):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    images = {"a": smooth_image(1), "b": smooth_image(2), "sub/c": smooth_image(3, 40, 56)}
    for name, image in images.items():
        Image.fromarray(image).save(inputs / f"{name}.{'jpg' if name == 'b' else 'png'}")
    written = predict.predict_paths(predictor, [inputs], tmp_path / "out", progress=False)
    assert len(written["images"]) == 9 and not written["videos"]

    for name, image in images.items():
        if name == "b":  # JPEG: predict what was decoded
            image = np.asarray(Image.open(inputs / "b.jpg").convert("RGB"))
        expected = predictor(image[None])[0]
        label_png = Image.open(tmp_path / "out" / "labels" / f"{name}.png")
        assert label_png.mode == "P"  # ids as values, palette embedded for viewers
        np.testing.assert_array_equal(np.asarray(label_png), expected)
        colors = np.asarray(Image.open(tmp_path / "out" / "colors" / f"{name}.png"))
        np.testing.assert_array_equal(colors, PALETTE[expected])
        overlay = np.asarray(Image.open(tmp_path / "out" / "overlays" / f"{name}.png"))
        np.testing.assert_array_equal(overlay, predict.overlay(image, PALETTE[expected], 0.5))
    assert len(np.unique(expected)) > 1  # a test over one colour would prove little


def read_frames(path):
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return list(reader.iter_data()), reader.get_meta_data()


def make_video(path, frames, fps=5):
    writer = imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=2)
    for frame in frames:
        writer.append_data(frame)
    writer.close()


def test_predict_video_writes_a_video_with_every_frame_in_palette_colours(tmp_path, predictor):
    make_video(tmp_path / "clip.mp4", [smooth_image(i) for i in range(5)])
    decoded, _ = read_frames(tmp_path / "clip.mp4")
    out = predict.predict_video(predictor, tmp_path / "clip.mp4", tmp_path / "out", render="color",
                                frame_outputs=("labels", "colors"), codec="ffv1", progress=False)
    assert out == tmp_path / "out" / "videos" / "clip_color.mkv"
    frames, meta = read_frames(out)
    assert len(frames) == len(decoded) == 5
    assert meta["fps"] == pytest.approx(5.0)
    for index, (frame, source) in enumerate(zip(frames, decoded)):
        expected = predictor(source[None])[0]
        np.testing.assert_array_equal(frame, PALETTE[expected])  # lossless codec: exact colours
        label_png = np.asarray(Image.open(tmp_path / "out" / "clip" / "labels" / f"{index:06d}.png"))
        np.testing.assert_array_equal(label_png, expected)
        assert (tmp_path / "out" / "clip" / "colors" / f"{index:06d}.png").is_file()


def test_predict_video_default_mp4_overlay_keeps_size_and_frame_count(tmp_path, predictor):
    make_video(tmp_path / "clip.mp4", [smooth_image(i) for i in range(3)])
    out = predict.predict_video(predictor, tmp_path / "clip.mp4", tmp_path / "out", progress=False)
    assert out.name == "clip_overlay.mp4"
    frames, _ = read_frames(out)
    assert len(frames) == 3 and frames[0].shape == (48, 64, 3)


def test_collect_inputs_rejects_missing_paths_and_unknown_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predict.collect_inputs([tmp_path / "missing.png"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not an image"):
        predict.collect_inputs([tmp_path / "notes.txt"])
