"""The base reader every dataset kind builds on, and `DatasetKind`, what a kind gives the registry.

Every source has `len(source)` and `source[i]` returning the record of the data contract:
  {"image": uint8 (H, W, 3) RGB, "label": uint8 (H, W) train ids with ignore = info.ignore_label,
   "id": str}
which is grain's RandomAccessDataSource protocol (`grain.MapDataset.source(source)`), and `.info`,
the dataset's `DatasetInfo`. Sources hold only paths and tables, so they pickle cheaply into grain
worker processes.

`LabelledImageSource` checks sizes, maps raw label ids with the dataset's `LabelMap` and reports
undefined ones (one warning per source, or an error in strict mode); `FileSource` reads
(image, label, id) file triples; `CachedSource` keeps another source's decoded records in memory;
the layout helpers at the end build and check such triples with error messages that show the
expected layout.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np

from bisenet_jax import paths
from bisenet_jax.data.decode import read_image, read_label
from bisenet_jax.data.info import DatasetInfo, LabelMap
from bisenet_jax.paths import Path


class InvalidLabelWarning(UserWarning):
    """Label ids outside the dataset's classes were found and mapped to the ignore label."""


# --------------------------------------------------------------------------------------------
# Dataset kinds


@dataclasses.dataclass(frozen=True)
class DatasetKind:
    """One dataset kind: its reader, its facts and its options, as `registry.py` holds it.

    name: the value of `config.data.name` that selects the kind.
    open_source: (data_config, split) -> the random-access source of one split.
    info: the kind's fixed facts; None where the data config holds them (custom, tfds,
        array_record), and then `info_from_config(data_config)` reads them.
    default_config: the defaults of `config.data.<name>`; None for a kind without options.
    """

    name: str
    open_source: Callable[[Any, str], Any]
    info: DatasetInfo | None = None
    info_from_config: Callable[[Any], DatasetInfo] | None = None
    default_config: Callable[[], ml_collections.ConfigDict] | None = None

    def __post_init__(self):
        if (self.info is None) == (self.info_from_config is None):
            raise ValueError(
                f"dataset kind {self.name!r}: give exactly one of `info` (fixed facts) and `info_from_config`"
            )

    def dataset_info(self, data_config: Any = None) -> DatasetInfo:
        """The fixed facts, or those `data_config` declares (then it is required)."""
        if self.info is not None:
            return self.info
        if data_config is None:
            raise KeyError(
                f"dataset {self.name!r} takes its classes from the data config: call "
                f"get_dataset_info(data_config) instead of get_dataset_info({self.name!r})"
            )
        return self.info_from_config(data_config)


def folder_kind(
    name: str,
    source_class: Callable[..., Any],
    info: DatasetInfo,
    default_config: Callable[[], ml_collections.ConfigDict] | None = None,
) -> DatasetKind:
    """The kind of a folder reader: `source_class(data.root, split, strict=data.strict, **data.<name>)`.

    The fields of `config.data.<name>` are the reader's keyword arguments, so the config's
    defaults are the only defaults that apply.
    """

    def open_source(data_config: Any, split: str):
        options = data_config[name].to_dict() if default_config is not None else {}
        return source_class(dataset_root(data_config, name), split, strict=data_config.strict, **options)

    return DatasetKind(name, open_source, info=info, default_config=default_config)


# --------------------------------------------------------------------------------------------
# Sources


class LabelledImageSource:
    """Base of the readers: checks sizes, maps raw label ids and reports undefined ones.

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
        label, invalid = self.label_map.apply(raw_label)
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
        self.info = self.sources[0].info
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


class CachedSource:
    """Another source's records, decoded once per process and then read from memory.

    Up to `max_bytes` of records are kept, each from its first read (in-process, the first epoch
    fills the cache; a grain worker reads only some batches of each epoch, so its cache fills over
    several, and each worker ends up holding the whole split). Once the cap is reached, the records
    not kept are decoded on every read, and `full` says so. Cached arrays are read-only, so a
    transform that wrote into its input would fail loudly rather than change the data of later
    epochs, and each read returns a new dict. An undefined label id is reported on a record's first
    read only. The cache does not travel in a pickle: each grain worker process builds its own.

    Written here rather than taken from grain: grain 0.2's caches (`CacheIterDataset`) keep an
    iterator's outputs, which would freeze the random augmentation drawn after the source.
    """

    def __init__(self, source: Any, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"CachedSource needs a positive max_bytes, got {max_bytes}")
        self.source = source
        self.info = source.info
        self.max_bytes = int(max_bytes)
        self._reset()

    def _reset(self) -> None:
        self._records: dict[int, dict] = {}
        self.cached_bytes = 0
        self.full = False  # a record did not fit under max_bytes
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        record = self._records.get(index)
        if record is not None:
            return dict(record)  # a new dict: replacing a field downstream leaves the cache as it was
        record = self.source[index]
        size = sum(value.nbytes for value in record.values() if isinstance(value, np.ndarray))
        with self._lock:
            if index in self._records:
                return dict(self._records[index])
            if self.cached_bytes + size > self.max_bytes:
                self.full = True
                return record
            for value in record.values():
                if isinstance(value, np.ndarray):
                    value.setflags(write=False)
            self._records[index] = record
            self.cached_bytes += size
        return dict(record)

    def inspect(self, index: int) -> tuple[dict, dict[int, int]]:
        return inspect_record(self.source, index)

    def _where(self, index: int) -> str:
        return self.source._where(index) if hasattr(self.source, "_where") else f"{self.source!r}[{index}]"

    def __getstate__(self):
        return {"source": self.source, "info": self.info, "max_bytes": self.max_bytes}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def __repr__(self) -> str:
        return f"CachedSource({self.source!r}, max_bytes={self.max_bytes})"


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
# Layout helpers for the folder readers


def dataset_root(data_config: Any, dataset: str) -> Path:
    """`data_config.root` (a folder or a gs:// URL), which must be set for the folder readers."""
    if not data_config.root:
        raise ValueError(f"data_config.root is empty: set it to the {dataset} dataset folder.")
    return paths.path(data_config.root)


def require_dir(path: Path, dataset: str, layout: str, hint: str = "") -> None:
    if not path.is_dir():
        raise FileNotFoundError(
            f"{dataset}: folder {path} does not exist. Expected layout:\n{layout}\n"
            + (hint or "Set data_config.root to the dataset folder, or check the split name.")
        )


def require_nonempty(samples: Sequence, dataset: str, split: str, where: Path, what: str) -> None:
    if not samples:
        raise ValueError(f"{dataset} split {split!r} is empty: no {what} in {where}.")


def missing_labels_error(dataset: str, missing: list[tuple[str, str]], total: int) -> FileNotFoundError:
    shown = "\n".join(f"  {image} -> expected {label}" for image, label in missing[:5])
    more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
    return FileNotFoundError(f"{dataset}: {len(missing)} of {total} images have no label file:\n{shown}{more}")


def pair_files(
    images: Sequence[Path],
    label_for: Callable[[Path], Path],
    dataset: str,
    id_for: Callable[[Path], str] | None = None,
) -> list[tuple[str, str, str]]:
    """(image, label, id) for each image; raises listing the images whose label file is missing."""
    samples, missing = [], []
    labels = [label_for(image) for image in images]
    absent = {str(label) for label in paths.missing_files(labels)}
    for image, label in zip(images, labels):
        if str(label) not in absent:
            samples.append((str(image), str(label), id_for(image) if id_for else image.stem))
        else:
            missing.append((str(image), str(label)))
    if missing:
        raise missing_labels_error(dataset, missing, len(images))
    return samples


def sorted_files(folder: Path, pattern: str) -> list[Path]:
    return sorted(path for path in folder.glob(pattern) if path.is_file())


def jpg_with_png_labels(image_dir: Path, label_dir: Path, dataset: str, split: str, layout: str):
    """(image, label, id) for `<image_dir>/<stem>.jpg` with `<label_dir>/<stem>.png` (COCO, ADE20K)."""
    for path in (image_dir, label_dir):
        require_dir(path, dataset, layout)
    images = sorted_files(image_dir, "*.jpg")
    require_nonempty(images, dataset, split, image_dir, "*.jpg images")
    return pair_files(images, lambda image: label_dir / f"{image.stem}.png", dataset)


def read_pairs(list_file: Path) -> list[tuple[str, str]]:
    """`image,label` (or whitespace-separated) pairs of a list file; blank lines and # comments skipped."""
    pairs = []
    with paths.path(list_file).open("r", encoding="utf-8") as f:
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


def check_pairs_exist(pairs: Sequence[tuple[Path, Path]], what: str, hint: str = "") -> None:
    missing = [str(path) for path in paths.missing_files(path for pair in pairs for path in pair)]
    if missing:
        shown = "\n".join(f"  {path}" for path in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(f"{what}: {len(missing)} listed files do not exist ({hint}):\n{shown}{more}")


def resolve(base: Path, entry: str) -> Path:
    """A list file's entry: a gs:// URL or an absolute path as it is, a relative path under `base`."""
    return paths.path(entry) if paths.is_remote(entry) else base / entry
