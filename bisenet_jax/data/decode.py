"""Decoding image and label files to arrays: for the readers, the ArrayRecord shards and `predict`.

  read_image(file) -> uint8 (H, W, 3) RGB       read_label(file) -> uint8 (H, W) ids

OpenCV decodes where it gives the same pixels as PIL for less CPU; PIL decodes the rest and
writes the error messages (which name the file). `opencv()` is how every module of the data
package gets cv2, configured once per process.
"""

from __future__ import annotations

import io
import os
import threading
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image

from bisenet_jax import paths

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


class ImageReadError(OSError):
    """An image or label file exists but cannot be decoded (truncated, corrupt, not an image)."""


# OpenCV runs every call on the calling thread: the pipeline's parallelism is grain's threads and
# worker processes, so a worker's CPU time is one core's and OpenCV's own pool would only compete
# with them. cv2.setNumThreads(1) (with OpenCV's pthreads backend, 0 and 1 both mean "no pool") is
# applied once per process, at the first decode or transform there (grain workers included).
OPENCV_THREADS = 1
_opencv_pid: int | None = None
_opencv_lock = threading.Lock()


def opencv():
    """The cv2 module, with `cv2.setNumThreads(OPENCV_THREADS)` applied once in this process."""
    global _opencv_pid
    if _opencv_pid != os.getpid():
        with _opencv_lock:  # grain threads may get here together.
            if _opencv_pid != os.getpid():
                cv2.setNumThreads(OPENCV_THREADS)
                _opencv_pid = os.getpid()
    return cv2


# Always 8-bit, 3 channels, RGB order; EXIF orientation is not applied (as with PIL).
_IMREAD_RGB = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION


def read_image(file: str | os.PathLike | BinaryIO, name: str | None = None) -> np.ndarray:
    """Decodes an image file to uint8 (H, W, 3) RGB; grayscale, RGBA, palette, CMYK are converted.

    `name` replaces the path in error messages (for in-memory files). EXIF orientation is not
    applied: annotations are aligned with the stored pixels. OpenCV decodes (a 2048x1024 PNG
    costs about 30% less CPU than with PIL; grey is replicated, alpha dropped, palettes expanded
    and 16-bit samples keep their top 8 bits, as PIL's path does). When OpenCV returns nothing
    (truncated or corrupt files, formats it lacks) the file goes through PIL, which decodes it or
    raises the ImageReadError naming the file.
    """
    name = name or str(file)
    data = _read_bytes(file, name)
    image = None
    if data:
        try:
            image = opencv().imdecode(np.frombuffer(data, np.uint8), _IMREAD_RGB)
        except cv2.error:
            image = None
    if image is not None and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return image
    return _read_image_pil(io.BytesIO(data), name)


def _read_image_pil(file: BinaryIO, name: str) -> np.ndarray:
    """PIL's decoding of read_image: the fallback, and the source of its error messages."""
    with _open(file, name) as image:
        if image.mode == "RGB":
            return np.asarray(image)
        if image.mode.startswith("I"):  # 16/32-bit grayscale: keep the top 8 of 16 bits.
            gray = np.clip(np.asarray(image, np.int64) >> 8, 0, 255).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=-1)
        # RGBA/LA: the colour channels are kept as stored (no compositing onto a background).
        return np.asarray(image.convert("RGB"))


def _read_bytes(file: str | os.PathLike | BinaryIO, name: str) -> bytes:
    """The bytes of a path (local or gs://) or of a binary file object (from its current position)."""
    try:
        if hasattr(file, "read"):
            return file.read()
        with paths.path(file).open("rb") as stream:
            return stream.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {name}") from None
    except OSError as error:
        raise ImageReadError(f"cannot read {name}: {error}. Check that it is a readable file.") from error


def read_label(file: str | os.PathLike | BinaryIO, name: str | None = None) -> np.ndarray:
    """Decodes a label file to uint8 (H, W) ids; palette-mode PNGs keep their indices, not colours.

    8-bit greyscale PNGs (the standard datasets' labels) are decoded by OpenCV, about 10% less CPU;
    everything else by PIL: cv2.imdecode expands palette PNGs to their colours with every flag
    (IMREAD_UNCHANGED gives BGR(A), IMREAD_GRAYSCALE their luma), losing the indices.
    """
    name = name or str(file)
    data = _read_bytes(file, name)
    if _is_8bit_grey_png(data):
        try:
            label = opencv().imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            label = None
        if label is not None and label.ndim == 2 and label.dtype == np.uint8:
            return label
    return _read_label_pil(io.BytesIO(data), name)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_8bit_grey_png(data: bytes) -> bool:
    """True if the PNG header (IHDR) says bit depth 8, colour type 0 (grey, no palette)."""
    return len(data) > 26 and data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and data[24:26] == b"\x08\x00"


def _read_label_pil(file: BinaryIO, name: str) -> np.ndarray:
    """PIL's decoding of read_label: every mode other than 8-bit grey PNG, and the error messages."""
    with _open(file, name) as image:
        mode = image.mode
        if mode in ("L", "P"):
            return np.asarray(image)
        if mode == "1":
            return np.asarray(image).astype(np.uint8)
        array = np.asarray(image)
    if mode.startswith("I") or mode == "F":
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                f"label file {name} holds {mode} values from {array.min()} to {array.max()}; labels "
                "must be ids 0..255 (8-bit). Convert the label files to 8-bit single-channel PNG."
            )
        return array.astype(np.uint8)
    if mode in ("LA", "PA"):
        return np.ascontiguousarray(array[..., 0])
    if mode in ("RGB", "RGBA") and _same_channels(array):
        return np.ascontiguousarray(array[..., 0])  # Grey ids stored as RGB.
    raise ValueError(
        f"label file {name} is a colour ({mode}) image; labels must be single-channel id maps "
        "(mode L or P, one class id per pixel). Convert colour-coded labels to ids with the "
        "dataset's palette first."
    )


def _same_channels(array: np.ndarray) -> bool:
    return np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])


def _open(file: str | os.PathLike | BinaryIO, name: str | None = None) -> Image.Image:
    """Opens and fully decodes an image, turning decoder failures into an ImageReadError naming the file."""
    name = name or str(file)
    image = None
    try:
        image = Image.open(file)
        image.load()  # Decode now: truncated files fail here, not later in a transform.
        return image
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {name}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        if image is not None:
            image.close()
        raise ImageReadError(
            f"cannot read {name}: {error}. The file is truncated, corrupt or not an image: "
            "re-download / re-extract it, or remove it from the split."
        ) from error
