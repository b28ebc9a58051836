"""Random-access sources for the standard datasets in their official layouts, custom data and TFDS.

Every source has `len(source)` and `source[i]` returning the record of the data contract:
  {"image": uint8 (H, W, 3) RGB, "label": uint8 (H, W) train ids with ignore = info.ignore_label,
   "id": str}
which is grain's RandomAccessDataSource protocol (`grain.MapDataset.source(source)`). Sources hold
only paths and tables, so they pickle cheaply into grain worker processes. `create_source(data_config,
split)` builds the right one from a data config; the classes can also be used directly.

data_config fields read here (each with `getattr` defaults, so a missing field is fine):
  name        cityscapes | camvid | coco_stuff | ade20k | custom | tfds | array_record | demo
              (or a name added with `register_source`)
  root        the folder holding the dataset in its official layout (for array_record: the shards)
  strict      False: label ids outside the classes (and not ignore) become ignore, counted and
              reported by one warning per source; True: ValueError naming the file
  cityscapes.use_train_id_files  False: map `*_gtFine_labelIds.png` (falls back to ready
              `*_gtFine_labelTrainIds.png` when a split has no labelIds files); True: read labelTrainIds
  camvid.use_list_file  unset/None: `<root>/<split>.txt` when it exists, else the folders; True/False force
  custom.list_file   `image,label` lines (or `image label`); the file is relative to root, its paths
              to the list file's folder (or absolute); "{split}" in the name is replaced by the split
  custom.image_dir, custom.label_dir   folders relative to root (used when list_file is empty),
              matched by relative path and file stem; "{split}" is replaced, and without it the
              `<dir>/<split>` subfolder is used when it exists
  custom.label_suffix   label stem = image stem + suffix (e.g. "_mask"); default ""
  custom.num_classes (required), custom.ignore_label (255), custom.label_map ("0:255,1:0" or a
              dict; raw ids not listed are undefined), custom.class_names ("a,b" or a sequence),
              custom.mean, custom.std (ImageNet by default)
  tfds.name, tfds.data_dir, tfds.image_key ("image"), tfds.label_key ("segmentation_mask"),
              tfds.id_key (optional feature used as the record id), tfds.num_classes (required),
              tfds.ignore_label, tfds.label_map, tfds.class_names, tfds.mean, tfds.std
  demo.seed, demo.num_train, demo.num_val, demo.image_size  (the demo source, see demo.py)

Splits: "train", "val", "test" for every dataset (ADE20K's training/validation and COCO-Stuff's
train2017/val2017 are accepted too); "train+val" concatenates splits.
"""

from __future__ import annotations

import bisect
import importlib
import io
import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
from PIL import Image

from bisenet_jax.data import datasets
from bisenet_jax.data.datasets import DatasetInfo, LabelMap

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


class ImageReadError(OSError):
    """An image or label file exists but cannot be decoded (truncated, corrupt, not an image)."""


class InvalidLabelWarning(UserWarning):
    """Label ids outside the dataset's classes were found and mapped to the ignore label."""


# --------------------------------------------------------------------------------------------
# Decoding


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
    """The bytes of a path or of a binary file object (from its current position)."""
    try:
        if hasattr(file, "read"):
            return file.read()
        with open(file, "rb") as stream:
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


def apply_label_map(label_map: LabelMap, raw: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """`label_map.apply(raw)` with OpenCV table lookups: (train ids uint8, {undefined raw id: pixels}).

    Same results; on a 2048x1024 label about 1.4 ms of CPU instead of 3.5 ms or more: one table
    lookup for the train ids, one for the undefined ids tested with hasNonZero, and pixel counts
    only when undefined ids occur.
    """
    raw = np.asarray(raw)
    if raw.dtype != np.uint8 or raw.ndim != 2 or raw.size == 0:
        return label_map.apply(raw)
    cv2 = opencv()
    mapped = cv2.LUT(raw, label_map.lut)
    undefined = ~label_map.valid
    if undefined.any() and cv2.hasNonZero(cv2.LUT(raw, undefined.astype(np.uint8))):
        counts = np.bincount(raw.reshape(-1), minlength=256)
        return mapped, {int(i): int(counts[i]) for i in np.flatnonzero((counts > 0) & undefined)}
    return mapped, {}


# --------------------------------------------------------------------------------------------
# The shared source logic


class LabelledImageSource:
    """Base of every reader: checks sizes, maps raw label ids and reports undefined ones.

    Subclasses implement `__len__` and `_read(index) -> (image, raw_label, id, where)` where
    `where` names the label's origin (a file) for error messages.
    """

    def __init__(self, info: DatasetInfo, split: str, label_map: LabelMap | None, strict: bool = False):
        self.info = info
        self.split = split
        self.label_map = label_map if label_map is not None else info.train_id_map
        self.strict = bool(strict)
        # Undefined raw id -> pixels, and the number of records that had any (in this process).
        self.invalid_label_counts: dict[int, int] = {}
        self.num_records_with_invalid_labels = 0
        self._warned = False
        self._lock = threading.Lock()

    def __len__(self) -> int:
        raise NotImplementedError

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, str, str]:
        raise NotImplementedError

    def inspect(self, index: int) -> tuple[dict, dict[int, int]]:
        """(record, {undefined raw id: pixels}) without warning or strict checks (for check_dataset)."""
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.info.name} {self.split}: index {index} out of range [0, {len(self)})")
        image, raw_label, record_id, where = self._read(index)
        if raw_label.shape != image.shape[:2]:
            raise ValueError(
                f"{where}: label size {raw_label.shape[1]}x{raw_label.shape[0]} (WxH) differs from "
                f"the image size {image.shape[1]}x{image.shape[0]} of record {record_id!r}; a label "
                "must have exactly its image's size (do not resize one without the other)."
            )
        label, invalid = apply_label_map(self.label_map, raw_label)
        return {"image": image, "label": label, "id": record_id}, invalid

    def __getitem__(self, index: int) -> dict:
        record, invalid = self.inspect(index)
        if invalid:
            self._report_invalid(index, invalid)
        return record

    def _report_invalid(self, index: int, invalid: dict[int, int]) -> None:
        where = self._where(index)
        ids = ", ".join(f"{raw_id} ({pixels} px)" for raw_id, pixels in sorted(invalid.items()))
        if self.strict:
            raise ValueError(
                f"{where}: label ids {ids} are not classes of {self.info.name} "
                f"(0..{self.info.num_classes - 1} after the label map) nor the ignore label "
                f"{self.info.ignore_label}. Fix the label files or the label map, or set "
                "data_config.strict=False to map them to ignore."
            )
        with self._lock:
            for raw_id, pixels in invalid.items():
                self.invalid_label_counts[raw_id] = self.invalid_label_counts.get(raw_id, 0) + pixels
            self.num_records_with_invalid_labels += 1
            first = not self._warned
            self._warned = True
        if first:  # One warning per source; the totals keep counting in invalid_label_counts.
            warnings.warn(
                f"{self.info.name} {self.split}: {where} has label ids {ids} outside the classes "
                f"(0..{self.info.num_classes - 1}) and not the ignore label; they are mapped to "
                f"ignore ({self.info.ignore_label}). This warning is shown once per source: "
                "totals are in source.invalid_label_summary(), `scripts/check_dataset.py` lists "
                "every affected file, and data_config.strict=True turns this into an error.",
                InvalidLabelWarning,
                stacklevel=3,
            )

    def invalid_label_summary(self) -> str:
        """One line: how many records had undefined label ids, and which ids with how many pixels."""
        with self._lock:
            counts = dict(sorted(self.invalid_label_counts.items()))
            records = self.num_records_with_invalid_labels
        if not records:
            return f"{self.info.name} {self.split}: no undefined label ids seen"
        ids = ", ".join(f"{raw_id}: {pixels} px" for raw_id, pixels in counts.items())
        return f"{self.info.name} {self.split}: {records} records had undefined label ids ({ids}), mapped to ignore"

    def _where(self, index: int) -> str:
        return f"record {index}"

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"]  # Locks do not pickle; grain pickles sources into worker processes.
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


class FileSource(LabelledImageSource):
    """A source over (image path, label path, id) triples on a file system."""

    def __init__(
        self,
        samples: Sequence[tuple[str, str, str]],
        info: DatasetInfo,
        split: str,
        label_map: LabelMap | None = None,
        strict: bool = False,
    ):
        super().__init__(info, split, label_map, strict)
        self.samples = [(str(image), str(label), str(record_id)) for image, label, record_id in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, str, str]:
        image_path, label_path, record_id = self.samples[index]
        return read_image(image_path), read_label(label_path), record_id, label_path

    def _where(self, index: int) -> str:
        return self.samples[index][1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.name!r}, split={self.split!r}, {len(self)} images)"


class ConcatSource:
    """Sources one after the other ("train+val")."""

    def __init__(self, sources: Sequence[Any]):
        self.sources = list(sources)
        self.info = getattr(self.sources[0], "info", None)
        self._ends = np.cumsum([len(source) for source in self.sources]).tolist()

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def _locate(self, index: int) -> tuple[Any, int]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range [0, {len(self)})")
        part = bisect.bisect_right(self._ends, index)
        return self.sources[part], index - (self._ends[part - 1] if part else 0)

    def __getitem__(self, index: int) -> dict:
        source, local_index = self._locate(index)
        return source[local_index]

    def inspect(self, index: int) -> tuple[dict, dict[int, int]]:
        return inspect_record(*self._locate(index))

    def _where(self, index: int) -> str:
        source, local_index = self._locate(index)
        return source._where(local_index) if hasattr(source, "_where") else f"{source!r}[{local_index}]"

    def __repr__(self) -> str:
        return f"ConcatSource({self.sources!r})"


def inspect_record(source: Any, index: int, info: DatasetInfo | None = None) -> tuple[dict, dict[int, int]]:
    """(record, {undefined id: pixels}) for any source; for sources without raw labels (demo, ...)
    label values outside the classes and not the ignore label count as undefined."""
    if hasattr(source, "inspect"):
        return source.inspect(index)
    record = source[index]
    info = info or source.info
    counts = np.bincount(np.asarray(record["label"]).reshape(-1), minlength=256)
    undefined = [i for i in np.flatnonzero(counts) if i >= info.num_classes and i != info.ignore_label]
    return record, {int(i): int(counts[i]) for i in undefined}


# --------------------------------------------------------------------------------------------
# Layout helpers


def _require_dir(path: Path, dataset: str, layout: str, hint: str = "") -> None:
    if not path.is_dir():
        raise FileNotFoundError(
            f"{dataset}: folder {path} does not exist. Expected layout:\n{layout}\n"
            + (hint or "Set data_config.root to the dataset folder, or check the split name.")
        )


def _require_nonempty(samples: Sequence, dataset: str, split: str, where: Path, what: str) -> None:
    if not samples:
        raise ValueError(f"{dataset} split {split!r} is empty: no {what} in {where}.")


def _missing_labels_error(dataset: str, missing: list[tuple[str, str]], total: int) -> FileNotFoundError:
    shown = "\n".join(f"  {image} -> expected {label}" for image, label in missing[:5])
    more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
    return FileNotFoundError(
        f"{dataset}: {len(missing)} of {total} images have no label file:\n{shown}{more}"
    )


def _pair(images: Sequence[Path], label_for: Callable[[Path], Path], dataset: str, id_for=None):
    """(image, label, id) for each image; raises listing the images whose label file is missing."""
    samples, missing = [], []
    for image in images:
        label = label_for(image)
        if label.is_file():
            samples.append((str(image), str(label), id_for(image) if id_for else image.stem))
        else:
            missing.append((str(image), str(label)))
    if missing:
        raise _missing_labels_error(dataset, missing, len(images))
    return samples


def _files(folder: Path, pattern: str) -> list[Path]:
    return sorted(path for path in folder.glob(pattern) if path.is_file())


# --------------------------------------------------------------------------------------------
# Cityscapes

CITYSCAPES_LAYOUT = """  <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
      (or _gtFine_labelTrainIds.png made by cityscapesscripts' createTrainIdLabelImgs)
  with <split> one of train, val, test"""


class CityscapesSource(FileSource):
    """Cityscapes fine annotations: labelIds mapped to the 19 trainIds, or ready labelTrainIds files."""

    def __init__(
        self, root: str | os.PathLike, split: str = "train", use_train_id_files: bool = False, strict: bool = False
    ):
        root = Path(root)
        image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        for folder in (image_dir, label_dir):
            hint = "Set data_config.root to the folder holding leftImg8bit/ and gtFine/."
            _require_dir(folder, "Cityscapes", CITYSCAPES_LAYOUT, hint)
        images = _files(image_dir, "*/*_leftImg8bit.png")
        _require_nonempty(images, "Cityscapes", split, image_dir, "<city>/*_leftImg8bit.png files")

        def label_for(kind: str) -> Callable[[Path], Path]:
            suffix = f"_gtFine_{kind}.png"
            return lambda image: label_dir / image.parent.name / image.name.replace("_leftImg8bit.png", suffix)

        def stem(image: Path) -> str:
            return image.name[: -len("_leftImg8bit.png")]

        info = datasets.get_dataset_info("cityscapes")
        has_label_ids = any(label_dir.glob("*/*_gtFine_labelIds.png"))
        has_train_ids = any(label_dir.glob("*/*_gtFine_labelTrainIds.png"))
        use_train_ids = use_train_id_files or (has_train_ids and not has_label_ids)
        try:
            samples = _pair(images, label_for("labelTrainIds" if use_train_ids else "labelIds"), "Cityscapes", stem)
        except FileNotFoundError as error:
            if not use_train_id_files:
                raise
            raise FileNotFoundError(
                f"{error}\nCreate the labelTrainIds files with cityscapesscripts' "
                "createTrainIdLabelImgs.py, or set data_config.cityscapes.use_train_id_files=False "
                "to map the *_gtFine_labelIds.png files."
            ) from None
        label_map = info.train_id_map if use_train_ids else info.label_map
        super().__init__(samples, info, split, label_map, strict)


# --------------------------------------------------------------------------------------------
# CamVid (SegNet release)

CAMVID_LAYOUT = """  <root>/{train,val,test}/*.png           RGB images (480x360)
  <root>/{train,val,test}annot/*.png      label ids 0..10, 11 = Unlabelled
  <root>/{train,val,test}.txt (optional)  "image label" lines with /SegNet/CamVid/... paths"""
_SEGNET_PREFIX = "/SegNet/CamVid/"


def reroot_segnet_path(path: str, root: str | os.PathLike) -> Path:
    """Moves a path of the SegNet list files (/SegNet/CamVid/train/x.png) under `root`.

    Paths without the /SegNet/CamVid/ prefix are kept when absolute and taken relative to root otherwise.
    """
    if _SEGNET_PREFIX in path:
        return Path(root) / path.split(_SEGNET_PREFIX, 1)[1]
    return Path(path) if os.path.isabs(path) else Path(root) / path


class CamVidSource(FileSource):
    """CamVid as released with SegNet: split folders, or the split's list file re-rooted onto `root`."""

    def __init__(
        self, root: str | os.PathLike, split: str = "train", use_list_file: bool | None = None, strict: bool = False
    ):
        root = Path(root)
        list_file = root / f"{split}.txt"
        if use_list_file is None:
            use_list_file = list_file.is_file()
        info = datasets.get_dataset_info("camvid")
        if use_list_file:
            if not list_file.is_file():
                raise FileNotFoundError(
                    f"CamVid list file {list_file} does not exist. Expected layout:\n{CAMVID_LAYOUT}"
                )
            pairs = [(reroot_segnet_path(a, root), reroot_segnet_path(b, root)) for a, b in _read_pairs(list_file)]
            _require_nonempty(pairs, "CamVid", split, list_file, "image/label lines")
            hint = f"the list's /SegNet/CamVid/ prefix is replaced by root={root}"
            _check_pairs_exist(pairs, f"CamVid list file {list_file}", hint=hint)
            samples = [(str(image), str(label), image.stem) for image, label in pairs]
        else:
            image_dir, label_dir = root / split, root / f"{split}annot"
            for folder in (image_dir, label_dir):
                _require_dir(folder, "CamVid", CAMVID_LAYOUT, "Set data_config.root to the SegNet CamVid folder.")
            images = _files(image_dir, "*.png")
            _require_nonempty(images, "CamVid", split, image_dir, "*.png images")
            samples = _pair(images, lambda image: label_dir / image.name, "CamVid")
        super().__init__(samples, info, split, info.label_map, strict)


def _read_pairs(list_file: Path) -> list[tuple[str, str]]:
    """`image,label` (or whitespace-separated) pairs of a list file; blank lines and # comments skipped."""
    pairs = []
    with open(list_file, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in line.split(",")] if "," in line else line.split()
            if len(parts) != 2 or not all(parts):
                raise ValueError(
                    f"{list_file}:{line_number}: expected two paths `image,label` (or `image label`), got {line!r}"
                )
            pairs.append((parts[0], parts[1]))
    return pairs


def _check_pairs_exist(pairs: Sequence[tuple[Path, Path]], what: str, hint: str = "") -> None:
    missing = [str(path) for pair in pairs for path in pair if not path.is_file()]
    if missing:
        shown = "\n".join(f"  {path}" for path in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(f"{what}: {len(missing)} listed files do not exist ({hint}):\n{shown}{more}")


# --------------------------------------------------------------------------------------------
# COCO-Stuff-164k

COCO_STUFF_LAYOUT = """  <root>/images/{train2017,val2017}/*.jpg
  <root>/stuffthingmaps_trainval2017/{train2017,val2017}/*.png   (raw ids 0..181, 255 unlabelled)"""
_COCO_SPLITS = {"train": "train2017", "val": "val2017"}


class CocoStuffSource(FileSource):
    """COCO-Stuff-164k with the stuffthingmaps label PNGs; the 182 raw ids map to 171 train ids."""

    def __init__(self, root: str | os.PathLike, split: str = "train", strict: bool = False):
        root, folder = Path(root), _COCO_SPLITS.get(split, split)
        image_dir, label_dir = root / "images" / folder, root / "stuffthingmaps_trainval2017" / folder
        for path in (image_dir, label_dir):
            _require_dir(path, "COCO-Stuff", COCO_STUFF_LAYOUT)
        images = _files(image_dir, "*.jpg")
        _require_nonempty(images, "COCO-Stuff", split, image_dir, "*.jpg images")
        samples = _pair(images, lambda image: label_dir / f"{image.stem}.png", "COCO-Stuff")
        info = datasets.get_dataset_info("coco_stuff")
        super().__init__(samples, info, split, info.label_map, strict)


# --------------------------------------------------------------------------------------------
# ADE20K

ADE20K_LAYOUT = """  <root>/images/{training,validation}/*.jpg
  <root>/annotations/{training,validation}/*.png   (0 = other, 1..150 classes)
  where <root> is ADEChallengeData2016 (or the folder containing it)"""
_ADE_SPLITS = {"train": "training", "val": "validation"}


class ADE20KSource(FileSource):
    """ADE20K SceneParsing (ADEChallengeData2016): 0 -> ignore, 1..150 -> 0..149."""

    def __init__(self, root: str | os.PathLike, split: str = "train", strict: bool = False):
        root, folder = Path(root), _ADE_SPLITS.get(split, split)
        if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
            root = root / "ADEChallengeData2016"
        image_dir, label_dir = root / "images" / folder, root / "annotations" / folder
        for path in (image_dir, label_dir):
            _require_dir(path, "ADE20K", ADE20K_LAYOUT)
        images = _files(image_dir, "*.jpg")
        _require_nonempty(images, "ADE20K", split, image_dir, "*.jpg images")
        samples = _pair(images, lambda image: label_dir / f"{image.stem}.png", "ADE20K")
        info = datasets.get_dataset_info("ade20k")
        super().__init__(samples, info, split, info.label_map, strict)


# --------------------------------------------------------------------------------------------
# Custom datasets

CUSTOM_LAYOUT = """  a list file of `image,label` lines (paths relative to the list file's folder, or absolute), or
  <root>/<image_dir>[/<split>]/**/<name>.<jpg|png|...> with <root>/<label_dir>[/<split>]/**/<name><label_suffix>.png"""


def custom_samples_from_list(list_file: str | os.PathLike, split: str = "") -> list[tuple[str, str, str]]:
    """(image, label, id) from a list file; relative paths are relative to the list file's folder."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"custom dataset: list file {list_file} does not exist. Expected:\n{CUSTOM_LAYOUT}")
    base = list_file.parent
    pairs = [(base / image, base / label) for image, label in _read_pairs(list_file)]
    _require_nonempty(pairs, "custom dataset", split, list_file, "`image,label` lines")
    _check_pairs_exist(pairs, f"custom list file {list_file}", hint=f"relative paths are taken from {base}")
    return [(str(image), str(label), _relative_id(image, base)) for image, label in pairs]


def custom_samples_from_folders(
    image_dir: str | os.PathLike, label_dir: str | os.PathLike, label_suffix: str = "", split: str = ""
) -> list[tuple[str, str, str]]:
    """(image, label, id) pairing images and labels by relative folder and file stem (any image extension)."""
    image_dir, label_dir = Path(image_dir), Path(label_dir)
    for folder in (image_dir, label_dir):
        hint = "Set data_config.custom.image_dir / label_dir (relative to root)."
        _require_dir(folder, "custom dataset", CUSTOM_LAYOUT, hint)
    images = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    _require_nonempty(images, "custom dataset", split, image_dir, f"images ({', '.join(IMAGE_EXTENSIONS)})")
    labels = {}
    for label in label_dir.rglob("*"):
        if label.suffix.lower() in IMAGE_EXTENSIONS and label.is_file():
            labels.setdefault(label.relative_to(label_dir).with_suffix("").as_posix(), label)
    samples, missing = [], []
    for image in images:
        key = image.relative_to(image_dir).with_suffix("").as_posix()
        label = labels.get(key + label_suffix)
        if label is None:
            missing.append((str(image), str(label_dir / f"{key}{label_suffix}.png")))
        else:
            samples.append((str(image), str(label), key))
    if missing:
        raise _missing_labels_error("custom dataset", missing, len(images))
    return samples


def _relative_id(image: Path, base: Path) -> str:
    try:
        return image.relative_to(base).with_suffix("").as_posix()
    except ValueError:
        return image.stem


def parse_label_map(value: Any) -> dict[int, int] | None:
    """A label map from a dict / ConfigDict, or a "src:dst,src:dst" string; empty -> None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if hasattr(value, "items"):
        value = value.to_dict() if hasattr(value, "to_dict") else value
        return {int(k): int(v) for k, v in value.items()} or None
    mapping = {}
    for item in str(value).split(","):
        if not item.strip():
            continue
        try:
            src, dst = item.split(":")
            mapping[int(src)] = int(dst)
        except ValueError:
            raise ValueError(
                f"label_map entry {item!r} in {value!r} is not `src:dst` with integer ids, e.g. \"0:255,1:0,2:1\""
            ) from None
    return mapping or None


def _names(value: Any) -> list[str] | None:
    if not value:
        return None
    if isinstance(value, str):
        return [name.strip() for name in value.split(",")]
    return [str(name) for name in value]


def info_from_options(name: str, options: Any, what: str) -> DatasetInfo:
    """DatasetInfo for custom / tfds data from a sub-config (num_classes, ignore_label, label_map, ...)."""
    num_classes = int(_get(options, "num_classes", 0))
    if num_classes <= 0:
        raise ValueError(f"{what}: set data_config.{name}.num_classes to the number of classes (got {num_classes}).")
    class_names = _names(_get(options, "class_names", None))
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{what}: {len(class_names)} class_names for num_classes={num_classes}: {class_names}")
    return datasets.make_dataset_info(
        name=name,
        num_classes=num_classes,
        class_names=class_names,
        ignore_label=int(_get(options, "ignore_label", datasets.IGNORE_LABEL)),
        label_map=parse_label_map(_get(options, "label_map", None)),
        mean=tuple(_get(options, "mean", datasets.IMAGENET_MEAN)),
        std=tuple(_get(options, "std", datasets.IMAGENET_STD)),
    )


def _custom_source(config: Any, split: str) -> FileSource:
    options = _get(config, "custom", None)
    info = info_from_options("custom", options, "custom dataset")
    root = Path(_get(config, "root", "") or ".")
    list_file = str(_get(options, "list_file", "")).replace("{split}", split)
    if list_file:
        samples = custom_samples_from_list(root / list_file, split)
    else:
        image_dir = _split_dir(root / str(_get(options, "image_dir", "images")), split)
        label_dir = _split_dir(root / str(_get(options, "label_dir", "labels")), split)
        samples = custom_samples_from_folders(image_dir, label_dir, str(_get(options, "label_suffix", "")), split)
    return FileSource(samples, info, split, info.label_map, strict=bool(_get(config, "strict", False)))


def _split_dir(folder: Path, split: str) -> Path:
    if "{split}" in str(folder):
        return Path(str(folder).replace("{split}", split))
    return folder / split if (folder / split).is_dir() else folder


# --------------------------------------------------------------------------------------------
# TFDS

_TFDS_MISSING = (
    "the TFDS reader needs tensorflow-datasets (and tensorflow): pip install 'bisenet_jax[tfds]'. "
    "The folder readers (cityscapes, camvid, coco_stuff, ade20k, custom) do not need it."
)


def _import_tfds():
    try:
        import tensorflow_datasets as tfds  # Optional extra, imported only for the TFDS path.
    except ImportError as error:
        raise ImportError(f"{_TFDS_MISSING} ({error})") from error
    return tfds


class TfdsSource(LabelledImageSource):
    """`tfds.data_source` over any dataset with an image feature and a segmentation-mask feature.

    The dataset must be prepared in array_record format (`download_and_prepare(file_format="array_record")`
    or `tfds build --file_format=array_record`), which is what gives TFDS random access.
    """

    def __init__(
        self,
        name: str,
        split: str,
        info: DatasetInfo,
        data_dir: str | None = None,
        image_key: str = "image",
        label_key: str = "segmentation_mask",
        id_key: str | None = None,
        strict: bool = False,
    ):
        super().__init__(info, split, info.label_map, strict)
        tfds = _import_tfds()
        builder = tfds.builder(name, data_dir=data_dir or None)
        splits = sorted(builder.info.splits.keys())
        if not splits:
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir}: run `tfds build {name} "
                "--file_format=array_record` (or builder.download_and_prepare(file_format='array_record'))."
            )
        if split == "val" and "val" not in splits and "validation" in splits:
            split = "validation"
        if split.split("[")[0] not in splits:  # "train[:10%]" slicing is allowed.
            raise ValueError(f"TFDS dataset {name!r} has no split {split!r}; its splits: {splits}")
        features = builder.info.features
        for key, field in ((image_key, "image_key"), (label_key, "label_key"), (id_key, "id_key")):
            if key and key not in features:
                raise KeyError(
                    f"TFDS dataset {name!r} has no feature {key!r} (data_config.tfds.{field}); "
                    f"its features: {sorted(features.keys())}"
                )
        try:
            self._source = tfds.data_source(name, split=split, data_dir=data_dir or None)
        except Exception as error:  # TFDS raises several types here; the hint is the same.
            raise ValueError(
                f"cannot open TFDS dataset {name!r} split {split!r} (splits: {splits}) for random access: {error}. "
                f"It must be prepared with file_format='array_record'."
            ) from error
        self.name, self.tfds_split = name, split
        self.image_key, self.label_key, self.id_key = image_key, label_key, id_key

    def __len__(self) -> int:
        return len(self._source)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, str, str]:
        example = self._source[index]
        where = self._where(index)
        image = np.asarray(example[self.image_key])
        if image.ndim == 2 or image.shape[-1] == 1:
            image = np.repeat(image.reshape(image.shape[:2])[..., None], 3, axis=-1)
        elif image.shape[-1] == 4:
            image = image[..., :3]
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(
                f"{where}: feature {self.image_key!r} has shape {image.shape}, expected (H, W, 3) or (H, W, 1)"
            )
        label = np.asarray(example[self.label_key])
        if label.ndim == 3 and label.shape[-1] == 1:
            label = label[..., 0]
        if label.ndim != 2:
            raise ValueError(
                f"{where}: feature {self.label_key!r} has shape {label.shape}, expected (H, W) or (H, W, 1)"
            )
        if label.dtype != np.uint8:
            if label.size and (label.min() < 0 or label.max() > 255):
                raise ValueError(f"{where}: mask values {label.min()}..{label.max()} do not fit uint8 ids 0..255")
            label = label.astype(np.uint8)
        record_id = example[self.id_key] if self.id_key else f"{self.tfds_split}_{index:06d}"
        if isinstance(record_id, bytes):
            record_id = record_id.decode("utf-8")
        return image.astype(np.uint8, copy=False), label, str(record_id), where

    def _where(self, index: int) -> str:
        return f"TFDS {self.name} {self.tfds_split}[{index}]"

    def __repr__(self) -> str:
        return f"TfdsSource({self.name!r}, split={self.tfds_split!r}, {len(self)} examples)"


def _tfds_source(config: Any, split: str) -> TfdsSource:
    options = _get(config, "tfds", None)
    name = str(_get(options, "name", ""))
    if not name:
        raise ValueError("data_config.tfds.name is empty: set it to the TFDS dataset name, e.g. 'my_dataset:1.0.0'")
    return TfdsSource(
        name,
        split,
        info=info_from_options("tfds", options, f"TFDS dataset {name!r}"),
        data_dir=str(_get(options, "data_dir", "")) or None,
        image_key=str(_get(options, "image_key", "image")),
        label_key=str(_get(options, "label_key", "segmentation_mask")),
        id_key=str(_get(options, "id_key", "")) or None,
        strict=bool(_get(config, "strict", False)),
    )


# --------------------------------------------------------------------------------------------
# The factory


def _get(options: Any, key: str, default: Any) -> Any:
    """options.key for a ConfigDict / object / dict, or `default` when absent or None."""
    if options is None:
        return default
    value = options.get(key, None) if isinstance(options, Mapping) else getattr(options, key, None)
    return default if value is None else value


def _demo_source(config: Any, split: str):
    demo = importlib.import_module("bisenet_jax.data.demo")
    options = _get(config, "demo", None)
    sizes = {"train": _get(options, "num_train", None), "val": _get(options, "num_val", None)}
    kwargs = {"seed": int(_get(options, "seed", 0))}
    if _get(options, "image_size", None) is not None:
        kwargs["image_size"] = tuple(_get(options, "image_size", None))
    return demo.DemoSource(split, num_examples=sizes.get(split), **kwargs)


def _array_record_source(config: Any, split: str):
    from bisenet_jax.data import array_record  # Local import keeps array_record optional here.

    return array_record.ArrayRecordSource(_get(config, "root", ""), split, strict=bool(_get(config, "strict", False)))


def _folder_reader(cls, **option_keys):
    """A factory for a folder reader taking (root, split, strict, **options from config.<name>)."""

    def factory(config: Any, split: str):
        root = _get(config, "root", "")
        if not root:
            raise ValueError(f"data_config.root is empty: set it to the {cls.__name__} dataset folder.")
        section = _get(config, str(_get(config, "name", "")), None)
        options = {key: _get(section, key, default) for key, default in option_keys.items()}
        return cls(root, split, strict=bool(_get(config, "strict", False)), **options)

    return factory


_FACTORIES: dict[str, Callable[[Any, str], Any]] = {
    "cityscapes": _folder_reader(CityscapesSource, use_train_id_files=False),
    "camvid": _folder_reader(CamVidSource, use_list_file=None),
    "coco_stuff": _folder_reader(CocoStuffSource),
    "ade20k": _folder_reader(ADE20KSource),
    "custom": _custom_source,
    "tfds": _tfds_source,
    "array_record": _array_record_source,
    "demo": _demo_source,
}


def register_source(name: str, factory: Callable[[Any, str], Any], overwrite: bool = False) -> None:
    """Adds a reader: `create_source(config, split)` with config.name == name calls factory(config, split)."""
    if name in _FACTORIES and not overwrite:
        raise ValueError(f"a source named {name!r} is already registered (pass overwrite=True to replace it)")
    _FACTORIES[name] = factory


def create_source(data_config: Any, split: str):
    """The random-access source for data_config.name and `split` ("a+b" concatenates splits)."""
    name = _get(data_config, "name", "")
    if name not in _FACTORIES:
        raise KeyError(f"unknown dataset {name!r} (data_config.name); known datasets: {', '.join(sorted(_FACTORIES))}")
    if "+" in split:
        return ConcatSource([create_source(data_config, part) for part in split.split("+")])
    return _FACTORIES[name](data_config, split)


def dataset_info_from_config(data_config: Any) -> DatasetInfo:
    """DatasetInfo for any data config: fixed tables, or the config's / the shards' class definitions."""
    name = _get(data_config, "name", "")
    if name == "custom":
        return info_from_options("custom", _get(data_config, "custom", None), "custom dataset")
    if name == "tfds":
        options = _get(data_config, "tfds", None)
        return info_from_options("tfds", options, f"TFDS dataset {_get(options, 'name', '')!r}")
    if name == "array_record":
        from bisenet_jax.data import array_record

        return array_record.read_dataset_info(_get(data_config, "root", ""))
    return datasets.get_dataset_info(name)
