"""What every exported file carries besides the network: the model, its classes and its input.

One JSON-compatible dict, :class:`ExportInfo`, stored in each format's own place (ONNX
``metadata_props``, a TFLite metadata buffer named ``bisenet_jax``, ``metadata.json`` inside a
``.stablehlo`` archive), so that a runner needs nothing but the file to normalise images, name the
classes and colour the predictions.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

METADATA_NAME = "bisenet_jax"
FORMAT_VERSION = 1
MIN_SIDE = 32  # the networks downsample by 32; smaller inputs have no 1/32 feature
# Keys stored as plain strings in ONNX metadata_props; every other value is JSON.
_STRING_KEYS = ("model_name", "dataset", "format", "layout", "quantization")


class ExportError(ValueError):
    """An export or an exported file that cannot work; the message names the file, field or value."""


@dataclasses.dataclass(frozen=True)
class ExportInfo:
    """The facts an exported model carries (the field names of ``bisenet_jax.data.DatasetInfo`` where
    they overlap, so a predictor can take either).

    ``height`` / ``width`` are the fixed input size, or None for a dynamic side; ``multiple_of`` is
    what a dynamic side must be a multiple of (1: any size of at least ``MIN_SIDE``).
    ``layout`` is the layout of the file's own input and output (the runners take NHWC).
    """

    model_name: str
    num_classes: int
    format: str
    layout: str = "NHWC"
    dataset: str | None = None
    class_names: tuple[str, ...] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    height: int | None = None
    width: int | None = None
    dynamic_batch: bool = True
    multiple_of: int = 1
    quantization: str | None = None
    version: int = FORMAT_VERSION

    @property
    def name(self) -> str:
        """The dataset name, as ``DatasetInfo.name``."""
        return self.dataset or "unknown"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_string_props(self) -> dict[str, str]:
        """Flat ``{key: str}`` for ONNX ``metadata_props``: names as they are, the rest as JSON."""
        return {k: (v if k in _STRING_KEYS and isinstance(v, str) else json.dumps(v))
                for k, v in self.to_dict().items() if v is not None}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str) -> "ExportInfo":
        """From :meth:`to_dict` output; an :class:`ExportError` naming ``where`` if it is not one."""
        missing = [k for k in ("model_name", "num_classes", "format") if values.get(k) is None]
        if missing:
            raise ExportError(f"{where}: the bisenet_jax metadata has no {', '.join(missing)}; "
                              "was this file written by scripts/export.py?")
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in fields}
        for key in ("class_names", "mean", "std"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        if values.get("palette") is not None:
            values["palette"] = tuple(tuple(int(c) for c in row) for row in values["palette"])
        values["num_classes"] = int(values["num_classes"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> "ExportInfo":
        try:
            values = json.loads(text)
        except (ValueError, UnicodeDecodeError) as error:
            raise ExportError(f"{where}: the bisenet_jax metadata is not valid JSON ({error})") from None
        return cls.from_dict(values, where)

    @classmethod
    def from_string_props(cls, props: Mapping[str, str], where: str) -> "ExportInfo":
        values: dict[str, Any] = {}
        for key, text in props.items():
            if key in _STRING_KEYS:
                values[key] = text
                continue
            try:
                values[key] = json.loads(text)
            except ValueError:
                values[key] = text
        return cls.from_dict(values, where)

    def check_input(self, shape: Sequence[int], where: str) -> None:
        """An :class:`ExportError` if an NHWC batch of ``shape`` cannot go through this model."""
        if len(shape) != 4 or shape[-1] != 3:
            raise ExportError(f"{where}: expected an NHWC batch of RGB images (N, H, W, 3), got shape {tuple(shape)}")
        height, width = int(shape[1]), int(shape[2])
        fixed = (self.height, self.width)
        if fixed != (None, None) and (height, width) != fixed:
            raise ExportError(f"{where} was exported for {self.height}x{self.width} inputs, got {height}x{width}: "
                              "resize the images or export again with --height/--width or --dynamic")
        if min(height, width) < MIN_SIDE:
            raise ExportError(f"{where}: input {height}x{width} is too small; both sides must be at least {MIN_SIDE}")
        if height % self.multiple_of or width % self.multiple_of:
            raise ExportError(f"{where} takes heights and widths that are multiples of {self.multiple_of}, got "
                              f"{height}x{width}: pad or resize the images, or export a fixed size with "
                              "--height/--width")


def describe_dataset(dataset: Any) -> dict[str, Any]:
    """The ExportInfo fields taken from a ``DatasetInfo`` (classes, normalisation, colours)."""
    return {"dataset": dataset.name, "class_names": tuple(dataset.class_names),
            "mean": tuple(float(m) for m in dataset.mean), "std": tuple(float(s) for s in dataset.std),
            "palette": tuple(tuple(int(c) for c in row) for row in dataset.palette)}


def dataset_fields(checkpoint_info: Mapping[str, Any], dataset: Any = None) -> dict[str, Any]:
    """Dataset fields for a checkpoint: from ``dataset`` (a name or a DatasetInfo), else the dataset
    the checkpoint records, else none (the file then carries no normalisation)."""
    from bisenet_jax.data import get_dataset_info

    source = dataset if dataset is not None else checkpoint_info.get("dataset")
    if not source:
        return {}
    try:
        info = get_dataset_info(source) if isinstance(source, str) else source
    except (KeyError, ValueError) as error:
        raise ExportError(f"dataset {source!r}: {error}; pass --dataset with a known dataset name") from None
    if int(info.num_classes) != int(checkpoint_info["num_classes"]):
        raise ExportError(f"the checkpoint has {checkpoint_info['num_classes']} classes but dataset {info.name!r} has "
                          f"{info.num_classes}; pass --dataset with the dataset the model was trained on")
    return describe_dataset(info)
