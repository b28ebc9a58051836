"""Packing any source into ArrayRecord shards, and a source reading them back.

Pods stream from cloud storage far better from a few large files than from 100k small PNGs, and
ArrayRecord gives grain random access into them. Layout written by `write_array_record`:

  <output_dir>/<split>-00000-of-00004.array_record   records in source order, contiguous per shard
  <output_dir>/dataset_info.json                      classes, palette, mean/std, ignore, split sizes

Each record is one example: a small header, the id (UTF-8), the image (PNG by default, or JPEG) and
the label (PNG, already in train ids, so reading needs no label map). Use it through the data config
with `name="array_record"`, `root=<output_dir>` (a folder or a gs:// URL: the shards are read from the
bucket directly, each process reading only the records of its own slice); the facts come from dataset_info.json
(`create_source(config, split).info`, or `get_dataset_info(config)` without opening a split). No
options in config.data.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import json
import math
import os
import struct
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter
from etils import epath
from PIL import Image

from bisenet_jax import paths
from bisenet_jax.data.decode import read_image, read_label
from bisenet_jax.data.info import DatasetInfo
from bisenet_jax.data.reader import DatasetKind, LabelledImageSource

_MAGIC = b"BJR1"
_HEADER = struct.Struct("<4sHII")  # magic, id bytes, image bytes, label bytes
INFO_FILE = "dataset_info.json"
# group_size:1 makes every record its own compressed chunk: random access reads one record only.
WRITER_OPTIONS = "group_size:1"


def encode_record(record: dict, image_format: str = "png") -> bytes:
    """Serialises a contract record {"image", "label", "id"} to bytes (see the module docstring)."""
    image, label = np.asarray(record["image"]), np.asarray(record["label"])
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"record {record.get('id')!r}: image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if label.dtype != np.uint8 or label.shape != image.shape[:2]:
        raise ValueError(
            f"record {record.get('id')!r}: label must be uint8 {image.shape[:2]}, got {label.dtype} {label.shape}"
        )
    record_id = str(record["id"]).encode("utf-8")
    image_bytes = _encode(image, image_format)
    label_bytes = _encode(label, "png")
    header = _HEADER.pack(_MAGIC, len(record_id), len(image_bytes), len(label_bytes))
    return header + record_id + image_bytes + label_bytes


def decode_record(data: bytes, where: str = "ArrayRecord record") -> tuple[np.ndarray, np.ndarray, str]:
    """(image uint8 (H, W, 3), label uint8 (H, W), id) from bytes written by encode_record."""
    if len(data) < _HEADER.size or data[:4] != _MAGIC:
        raise ValueError(f"{where} is not a bisenet_jax record (bad header); was it written by write_array_record?")
    _, id_size, image_size, label_size = _HEADER.unpack_from(data)
    start = _HEADER.size
    expected = start + id_size + image_size + label_size
    if len(data) != expected:
        raise ValueError(f"{where} is truncated: {len(data)} bytes, header says {expected}")
    record_id = data[start : start + id_size].decode("utf-8")
    start += id_size
    image = read_image(io.BytesIO(data[start : start + image_size]), name=f"{where} ({record_id}) image")
    start += image_size
    label = read_label(io.BytesIO(data[start : start + label_size]), name=f"{where} ({record_id}) label")
    return image, label, record_id


def _encode(array: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    if image_format == "png":
        # compress_level 1: about 4x faster to write than the default 6, for ~7% more bytes on CamVid.
        Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    elif image_format == "jpeg":
        Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    else:
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    return buffer.getvalue()


def shard_paths(output_dir: str | os.PathLike, split: str, num_shards: int) -> list[str]:
    """The shard file names for a split: <split>-00000-of-0000N.array_record, ..."""
    folder = epath.Path(output_dir)
    return [os.fspath(folder / f"{split}-{i:05d}-of-{num_shards:05d}.array_record") for i in range(num_shards)]


def _write_shard(source: Any, path: str, indices: Sequence[int], image_format: str) -> int:
    with paths.staged_output(paths.path(path)) as local:  # the writer writes local files only
        writer = ArrayRecordWriter(os.fspath(local), WRITER_OPTIONS)
        try:
            for index in indices:
                writer.write(encode_record(source[index], image_format))
        finally:
            writer.close()
    return len(indices)


def write_array_record(
    source: Any,
    output_dir: str | os.PathLike,
    split: str,
    info: DatasetInfo | None = None,
    num_shards: int | None = None,
    image_format: str = "png",
    num_threads: int = 1,
) -> list[str]:
    """Packs every record of `source` into ArrayRecord shards; returns the shard paths.

    info: the dataset's DatasetInfo (default: `source.info`), saved to dataset_info.json together
        with the split sizes (the file is updated when more splits are written to the folder).
    num_shards: default one shard per 1000 records. Records keep the source order.
    num_threads: shards written at once, by threads (Pillow releases the GIL while coding, and
        threads need no pickling of the source).
    """
    info = info if info is not None else getattr(source, "info", None)
    if info is None:
        raise ValueError("write_array_record needs the dataset's DatasetInfo: pass info=... (the source has no .info)")
    total = len(source)
    if total == 0:
        raise ValueError(f"source {source!r} is empty: nothing to write for split {split!r}")
    num_shards = num_shards or max(1, math.ceil(total / 1000))
    num_shards = min(num_shards, total)
    output = paths.path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    for stale in output.glob(f"{split}-*-of-*.array_record"):
        stale.unlink()  # Rewriting a split with another shard count must not leave old shards behind.
    shards = shard_paths(output, split, num_shards)
    bounds = [total * i // num_shards for i in range(num_shards + 1)]
    jobs = [(source, path, range(bounds[i], bounds[i + 1]), image_format) for i, path in enumerate(shards)]
    with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
        written = sum(pool.map(lambda job: _write_shard(*job), jobs))
    _update_info_file(output, info, split, written, num_shards, image_format)
    return shards


def _update_info_file(
    output: paths.Path, info: DatasetInfo, split: str, num_records: int, num_shards: int, image_format: str
) -> None:
    path = output / INFO_FILE
    content = json.loads(path.read_text()) if path.exists() else {}
    splits = content.get("splits", {}) if content.get("name") == info.name else {}
    splits[split] = {"num_records": num_records, "num_shards": num_shards, "image_format": image_format}
    content = {
        "format": "bisenet_jax.array_record.v1",
        "name": info.name,
        "class_names": list(info.class_names),
        "num_classes": info.num_classes,
        "palette": np.asarray(info.palette).tolist(),
        "mean": list(info.mean),
        "std": list(info.std),
        "ignore_label": info.ignore_label,
        "splits": splits,
    }
    path.write_text(json.dumps(content, indent=1))


def read_dataset_info(root: str | os.PathLike) -> DatasetInfo:
    """The DatasetInfo saved next to the shards (labels in the shards are train ids: no label map)."""
    path = paths.path(root) / INFO_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: data_config.root must be a folder written by write_array_record "
            "(holding <split>-NNNNN-of-NNNNN.array_record shards and dataset_info.json)."
        )
    content = json.loads(path.read_text())
    fields = {field.name for field in dataclasses.fields(DatasetInfo)} - {"label_map"}
    return DatasetInfo(**{key: value for key, value in content.items() if key in fields})


class ArrayRecordSource(LabelledImageSource):
    """Random access into the ArrayRecord shards of one split (grain's ArrayRecordDataSource underneath)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", strict: bool = False):
        info = read_dataset_info(root)
        super().__init__(info, split, None, strict)
        folder = paths.path(root)
        shards = sorted(os.fspath(p) for p in folder.glob(f"{split}-*-of-*.array_record"))
        if not shards:
            written = sorted(p.name for p in folder.glob("*.array_record"))
            raise FileNotFoundError(
                f"no ArrayRecord shards for split {split!r} in {root} (expected {split}-00000-of-NNNNN.array_record; "
                f"found {written[:5] or 'none'}). Write them with write_array_record(source, root, {split!r})."
            )
        # gs:// shards are read by array_record's own GCS client (paths.connect_emulator points it at
        # an emulator); records are fetched one by one, so a process reads only its slice.
        self.root, self.paths = os.fspath(root), shards
        self._records = grain.sources.ArrayRecordDataSource(shards)

    def __len__(self) -> int:
        return len(self._records)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, str, str]:
        where = self._where(index)
        image, label, record_id = decode_record(self._records[index], where)
        return image, label, record_id, where

    def _where(self, index: int) -> str:
        return f"{self.root} {self.split}[{index}]"

    def __repr__(self) -> str:
        shards = f"{len(self)} records in {len(self.paths)} shards"
        return f"ArrayRecordSource({self.root!r}, split={self.split!r}, {shards})"


def info_from_config(data_config: Any) -> DatasetInfo:
    return read_dataset_info(data_config.root)


def open_source(data_config: Any, split: str) -> ArrayRecordSource:
    return ArrayRecordSource(data_config.root, split, strict=data_config.strict)


KIND = DatasetKind("array_record", open_source, info_from_config=info_from_config)
