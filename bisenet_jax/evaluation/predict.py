"""Prediction on images, folders and videos: label PNGs, palette-coloured PNGs and overlays.

Colours are the dataset's own palette (``DatasetInfo.palette``: the official Cityscapes and CamVid
colours; for datasets without official colours, including custom ones, the documented
``bisenet_jax.data.info.make_palette`` colours: class c gets the PASCAL VOC colour c + 1, so
no class is black). Ignored / unknown ids are drawn black.

Outputs for an image ``<rel>/<name>.<ext>`` (``rel`` relative to the folder given):

- ``labels/<rel>/<name>.png``: class ids as pixel values, a palette-mode PNG (viewers show the
  colours, programs read the ids);
- ``colors/<rel>/<name>.png``: RGB in the palette colours;
- ``overlays/<rel>/<name>.png``: the image blended with the colours (``alpha`` = colour weight).

A video ``<name>.<ext>`` gives ``videos/<name>_<overlay|color>.mp4`` at the input frame rate
(imageio with its ffmpeg plugin), and optionally the per-frame PNGs as above under ``<name>/``.

Inputs and the output folder may be ``gs://`` URLs (``bisenet_jax.paths``); a video in a bucket is
read from, and a video for a bucket written to, a local temporary copy.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import os
import pathlib
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from bisenet_jax import paths
from bisenet_jax.data.decode import IMAGE_EXTENSIONS, read_image
from bisenet_jax.evaluation.evaluator import default_eval_config, make_predict_fn

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
OUTPUTS = ("labels", "colors", "overlays")
# Video codecs: name -> (file extension, pixel format, writer options). libx264 plays everywhere;
# ffv1 is lossless (exact palette colours), for checking or further processing.
VIDEO_CODECS = {"libx264": (".mp4", "yuv420p", {"quality": 8}), "ffv1": (".mkv", "bgr0", {})}


# --------------------------------------------------------------------------------------------
# Rendering


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class ids (..., H, W) -> RGB uint8 (..., H, W, 3) in ``palette`` colours; other ids black."""
    palette = np.asarray(palette, np.uint8)
    table = np.zeros((256, 3), np.uint8) if len(palette) <= 256 else np.zeros((len(palette) + 1, 3), np.uint8)
    table[:len(palette)] = palette
    labels = np.asarray(labels)
    return table[np.where((labels >= 0) & (labels < len(palette)), labels, len(table) - 1)]


def overlay(image: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colors`` in uint8."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colors.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def label_image(labels: np.ndarray, palette: np.ndarray) -> Image.Image:
    """A palette-mode PNG image of class ids (<= 256 classes), or 16-bit grey for more classes."""
    if len(palette) > 256:
        return Image.fromarray(labels.astype(np.uint16))
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = np.zeros((256, 3), np.uint8)
    flat[:len(palette)] = palette
    image.putpalette(flat.reshape(-1).tolist())
    return image


# --------------------------------------------------------------------------------------------
# Inputs


def collect_inputs(inputs: Sequence[str | pathlib.Path]) -> tuple[list[tuple[paths.Path, pathlib.Path]],
                                                                    list[paths.Path]]:
    """Images as (path, output path without suffix) and videos, from files and folders (recursive).

    A folder's images keep their path relative to the folder; a file given directly keeps its name.
    """
    images, videos = [], []
    for path in map(paths.path, inputs):
        if path.is_dir():
            found = paths.files_under(path)
            images += [(p, pathlib.Path(os.fspath(p.relative_to(path))).with_suffix(""))
                       for p in found if p.suffix.lower() in IMAGE_EXTENSIONS]
            videos += [p for p in found if p.suffix.lower() in VIDEO_EXTENSIONS]
        elif path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            images.append((path, pathlib.Path(path.stem)))
        elif path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
            videos.append(path)
        elif path.exists():
            raise ValueError(f"{path}: not an image ({', '.join(IMAGE_EXTENSIONS)}) nor a video "
                             f"({', '.join(VIDEO_EXTENSIONS)})")
        else:
            raise FileNotFoundError(f"input {path} does not exist")
    if not images and not videos:
        raise ValueError(f"no images or videos found in {', '.join(map(str, inputs))}")
    return images, videos


# --------------------------------------------------------------------------------------------
# The predictor


class Predictor:
    """Batched prediction of uint8 RGB images with one model, protocol and dataset normalisation.

    ``eval_config`` chooses the protocol (default ss: whole image). Batches shorter than
    ``batch_size`` are padded, so every batch of one image size reuses one compiled program.
    """

    def __init__(self, model: Any, variables: Any, dataset_info: Any, eval_config: Any = None,
                 batch_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.variables = variables
        self.info = dataset_info
        self.batch_size = batch_size
        self._predict = make_predict_fn(model, eval_config or default_eval_config(), dataset_info.mean,
                                        dataset_info.std)

    def dispatch(self, images: np.ndarray) -> Any:
        """Starts predicting (B <= batch_size, H, W, 3) uint8 images; ``np.asarray`` of the result
        blocks and gives (batch_size, H, W) int32 class ids (the first B are the real ones)."""
        images = np.asarray(images, np.uint8)
        if images.ndim != 4 or images.shape[-1] != 3 or not 1 <= len(images) <= self.batch_size:
            raise ValueError(f"expected 1..{self.batch_size} RGB images (B, H, W, 3), got {images.shape}")
        if len(images) < self.batch_size:
            images = np.concatenate([images, np.zeros((self.batch_size - len(images), *images.shape[1:]), np.uint8)])
        return self._predict(self.variables, images)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 -> (B, H, W) int32 class ids."""
        return np.asarray(self.dispatch(images))[:len(images)]

    def predict_batches(self, frames: Iterable[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
        """(key, image) pairs in, (key, image, labels) out in the same order.

        Consecutive images of one size are batched; the next batch is read while this one runs.
        """
        pending = None
        for batch in _same_size_batches(frames, self.batch_size):
            started = (batch, self.dispatch(np.stack([image for _, image in batch])))
            if pending is not None:
                yield from _finish(*pending)
            pending = started
        if pending is not None:
            yield from _finish(*pending)


def _finish(batch, result):
    labels = np.asarray(result)
    for (key, image), label in zip(batch, labels):
        yield key, image, label


def _same_size_batches(frames, batch_size):
    batch = []
    for key, image in frames:
        if batch and (len(batch) == batch_size or image.shape != batch[0][1].shape):
            yield batch
            batch = []
        batch.append((key, image))
    if batch:
        yield batch


# --------------------------------------------------------------------------------------------
# Images and folders


def predict_images(predictor: Predictor, items: Sequence[tuple[paths.Path, pathlib.Path]],
                   output_dir: str | os.PathLike, outputs: Sequence[str] = OUTPUTS, alpha: float = 0.5,
                   progress: bool = True) -> list[paths.Path]:
    """Predicts ``items`` from ``collect_inputs`` and writes ``outputs``; returns the files written."""
    _check_outputs(outputs)
    output_dir = paths.path(output_dir)
    frames = ((name, read_image(path)) for path, name in items)
    written = []
    with concurrent.futures.ThreadPoolExecutor(2) as writer, \
            tqdm(total=len(items), desc="predict", unit="img", disable=not progress) as bar:
        futures = []
        for name, image, labels in predictor.predict_batches(frames):
            futures.append(writer.submit(_write_outputs, output_dir, name, image, labels,
                                         predictor.info.palette, outputs, alpha))
            bar.update(1)
        for future in futures:
            written += future.result()
    return written


def _write_outputs(output_dir, name, image, labels, palette, outputs, alpha) -> list[paths.Path]:
    written = []
    colors = colorize(labels, palette) if {"colors", "overlays"} & set(outputs) else None
    for kind in outputs:
        path = output_dir / kind / name.with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "labels":
            picture = label_image(labels, palette)
        elif kind == "colors":
            picture = Image.fromarray(colors)
        else:
            picture = Image.fromarray(overlay(image, colors, alpha))
        with path.open("wb") as file:  # a local file or a gs:// object
            picture.save(file, format="PNG")
        written.append(path)
    return written


def _check_outputs(outputs):
    unknown = set(outputs) - set(OUTPUTS)
    if unknown:
        raise ValueError(f"unknown output kind(s) {sorted(unknown)}; choose from {', '.join(OUTPUTS)}")


# --------------------------------------------------------------------------------------------
# Videos


def predict_video(predictor: Predictor, video: str | os.PathLike, output_dir: str | os.PathLike,
                  render: str = "overlay", alpha: float = 0.5, frame_outputs: Sequence[str] = (),
                  codec: str = "libx264", progress: bool = True) -> paths.Path:
    """Predicts every frame of ``video`` and writes ``videos/<name>_<render>.mp4`` at its frame rate.

    ``render`` is ``"overlay"`` or ``"color"``. ``frame_outputs`` (kinds of ``OUTPUTS``) also writes
    per-frame PNGs under ``<name>/<kind>/<frame index>.png``. ``codec`` is a key of
    ``VIDEO_CODECS`` (``"ffv1"`` writes a lossless ``.mkv``). Returns the video written.
    """
    if render not in ("overlay", "color"):
        raise ValueError(f"video render must be 'overlay' or 'color', got {render!r}")
    _check_outputs(frame_outputs)
    if codec not in VIDEO_CODECS:
        raise ValueError(f"unknown video codec {codec!r}; choose from {', '.join(VIDEO_CODECS)}")
    extension = VIDEO_CODECS[codec][0]
    video, output_dir = paths.path(video), paths.path(output_dir)
    out_path = output_dir / "videos" / f"{video.stem}_{render}{extension}"
    with paths.local_file(video) as local_video, paths.staged_output(out_path) as local_out:
        _render_video(predictor, local_video, local_out, output_dir / video.stem, render, alpha, frame_outputs,
                      codec, progress)
    return out_path


def _render_video(predictor, video: pathlib.Path, out_path: pathlib.Path, frames_dir, render, alpha, frame_outputs,
                  codec, progress) -> None:
    import imageio.v2 as imageio

    _, pixel_format, options = VIDEO_CODECS[codec]
    with _ffmpeg_subprocesses():
        reader = imageio.get_reader(video, format="FFMPEG")
    meta = reader.get_meta_data()
    fps = float(meta.get("fps") or 25.0)
    duration = meta.get("duration")
    total = int(round(duration * fps)) if duration and duration != float("inf") else None
    # macro_block_size=2: keep the size (even sides suffice for yuv420p) instead of resizing to 16.
    with _ffmpeg_subprocesses():
        writer = imageio.get_writer(out_path, format="FFMPEG", fps=fps, codec=codec, macro_block_size=2,
                                    pixelformat=pixel_format, **options)
    frames = ((pathlib.Path(f"{index:06d}"), frame[..., :3]) for index, frame in enumerate(reader))
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool, \
                tqdm(total=total, desc=f"predict {video.name}", unit="frame", disable=not progress) as bar:
            futures = []
            for name, frame, labels in predictor.predict_batches(frames):
                colors = colorize(labels, predictor.info.palette)
                with _ffmpeg_subprocesses():  # the writer starts ffmpeg on the first frame
                    writer.append_data(overlay(frame, colors, alpha) if render == "overlay" else colors)
                if frame_outputs:
                    futures.append(pool.submit(_write_outputs, frames_dir, name, frame, labels,
                                               predictor.info.palette, frame_outputs, alpha))
                bar.update(1)
            for future in futures:
                future.result()
    finally:
        writer.close()
        reader.close()


@contextlib.contextmanager
def _ffmpeg_subprocesses():
    """imageio starts ffmpeg with fork + exec; JAX warns about any fork, but an exec'd child never
    runs JAX code, so the warning does not apply here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


def predict_paths(predictor: Predictor, inputs: Sequence[str | pathlib.Path], output_dir: str | pathlib.Path,
                  outputs: Sequence[str] = OUTPUTS, alpha: float = 0.5, video_render: str = "overlay",
                  video_frame_outputs: Sequence[str] = (), video_codec: str = "libx264",
                  progress: bool = True) -> dict[str, list[pathlib.Path]]:
    """Everything ``inputs`` (images, folders, videos) holds; returns {"images": [...], "videos": [...]}."""
    images, videos = collect_inputs(inputs)
    written = {"images": [], "videos": []}
    if images:
        written["images"] = predict_images(predictor, images, output_dir, outputs, alpha, progress)
    for video in videos:
        written["videos"].append(predict_video(predictor, video, output_dir, video_render, alpha,
                                               video_frame_outputs, video_codec, progress))
    return written
