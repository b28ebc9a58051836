"""Serialized StableHLO: ``jax.export`` of the network with symbolic batch, height and width.

A ``.stablehlo`` file is a zip archive of two members:

- ``model.jax_exported``: ``jax.export.Exported.serialize()`` bytes (StableHLO with the weights as
  constants, lowered for the platforms given at export);
- ``metadata.json``: :class:`~bisenet_jax.export.metadata.ExportInfo` (model, classes, mean/std,
  palette, input size).

Loading needs JAX and the standard library only, not bisenet_jax::

    import json, zipfile, jax
    with zipfile.ZipFile("model.stablehlo") as archive:
        exported = jax.export.deserialize(archive.read("model.jax_exported"))
        metadata = json.loads(archive.read("metadata.json"))
    logits = exported.call(images)  # (N, H, W, 3) float32, (x / 255 - mean) / std -> (N, H, W, C)

With a dynamic size, H and W are any sizes of at least 32 pixels; the batch is always symbolic.
"""
from __future__ import annotations

import os
import pathlib
import zipfile
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from bisenet_jax.export.metadata import MIN_SIDE, ExportError, ExportInfo

MODEL_MEMBER = "model.jax_exported"
METADATA_MEMBER = "metadata.json"
DEFAULT_PLATFORMS = ("cpu", "cuda")


def input_spec(info: ExportInfo) -> jax.ShapeDtypeStruct:
    """The (N, H, W, 3) float32 argument: N symbolic, H and W fixed or symbolic (>= 32 each)."""
    height = str(info.height) if info.height is not None else "h"
    width = str(info.width) if info.width is not None else "w"
    constraints = [f"{side} >= {MIN_SIDE}" for side, fixed in (("h", info.height), ("w", info.width)) if fixed is None]
    shape = jax.export.symbolic_shape(f"b, {height}, {width}, 3", constraints=constraints)
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def export_stablehlo(logits_fn: Callable, path: str | os.PathLike, info: ExportInfo, *,
                     platforms: Sequence[str] = DEFAULT_PLATFORMS) -> pathlib.Path:
    """Write ``logits_fn`` ((N, H, W, 3) -> (N, H, W, C), weights closed over) as a ``.stablehlo`` archive."""
    path = pathlib.Path(path)
    exported = jax.export.export(jax.jit(logits_fn), platforms=tuple(platforms))(input_spec(info))
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(MODEL_MEMBER, bytes(exported.serialize()))
        archive.writestr(METADATA_MEMBER, info.to_json())
    return path


def read_stablehlo(path: str | os.PathLike) -> tuple[jax.export.Exported, ExportInfo]:
    """``(Exported, ExportInfo)`` of a ``.stablehlo`` archive; an ExportError naming the file if it is not one."""
    path = pathlib.Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = {MODEL_MEMBER, METADATA_MEMBER} - names
            if missing:
                raise ExportError(f"{path}: not a bisenet_jax StableHLO archive, it has no {', '.join(sorted(missing))} "
                                  f"(members: {sorted(names)[:5]})")
            serialized = archive.read(MODEL_MEMBER)
            metadata = archive.read(METADATA_MEMBER)
    except (zipfile.BadZipFile, OSError) as error:
        raise ExportError(f"{path}: cannot read it as a .stablehlo archive (a zip file): {error}") from None
    info = ExportInfo.from_json(metadata, str(path))
    try:
        exported = jax.export.deserialize(bytearray(serialized))
    except Exception as error:  # flatbuffer / MLIR parse errors have no common type
        raise ExportError(f"{path}: {MODEL_MEMBER} is not a serialized jax.export module ({error})") from None
    return exported, info
