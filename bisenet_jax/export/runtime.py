"""Run an exported file with the call shape of the JAX model: ``load_exported(path).logits(images)``.

:class:`ExportedModel` also has a Flax-like ``apply(variables, images, train=False)`` (``variables``
ignored) that works under ``jax.jit`` (a ``jax.pure_callback`` into onnxruntime or LiteRT, or the
deserialized StableHLO itself), so the evaluator's protocols and ``evaluation.predict.Predictor``
take an exported model in place of a Flax module, with ``model.info`` (classes, mean/std, palette)
in place of the dataset.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from bisenet_jax import xla_flags
from bisenet_jax.export.metadata import ExportError, ExportInfo

FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".stablehlo": "stablehlo"}


def format_of(path: str | os.PathLike) -> str:
    """``onnx`` / ``tflite`` / ``stablehlo`` from the file suffix; an ExportError for anything else."""
    suffix = pathlib.Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ExportError(f"{path}: unknown exported-model suffix {suffix!r}; expected one of {', '.join(FORMATS)}")
    return FORMATS[suffix]


class ExportedModel:
    """An exported BiSeNet: ``logits`` on host arrays, ``apply`` inside JAX programs, ``info`` for the rest."""

    def __init__(self, path: str | os.PathLike, info: ExportInfo, run: Callable[[np.ndarray], np.ndarray],
                 traceable: Callable[[jax.Array], jax.Array] | None = None):
        self.path = pathlib.Path(path)
        self.info = info
        self._run = run
        self._traceable = traceable

    def __repr__(self) -> str:
        size = "dynamic" if self.info.height is None else f"{self.info.height}x{self.info.width}"
        return f"ExportedModel({str(self.path)!r}, {self.info.format}, {self.info.model_name}, {size})"

    def logits(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) float32 normalised RGB -> (N, H, W, num_classes) float32 logits."""
        images = np.asarray(images, np.float32)
        self.info.check_input(images.shape, str(self.path))
        return np.asarray(self._run(images), np.float32)

    def apply(self, variables: Any, images: jax.Array, train: bool = False) -> jax.Array:
        """``model.apply``'s signature for the evaluator and predictor; ``variables`` are ignored."""
        del variables
        if train:
            raise ExportError(f"{self.path}: an exported model runs in inference mode only")
        self.info.check_input(images.shape, str(self.path))
        if self._traceable is not None:
            return self._traceable(jnp.asarray(images, jnp.float32))
        out = jax.ShapeDtypeStruct((*images.shape[:3], self.info.num_classes), jnp.float32)
        return jax.pure_callback(lambda x: self._run(np.asarray(x, np.float32)), out, images.astype(jnp.float32))


def load_exported(path: str | os.PathLike, *, threads: int | None = None) -> ExportedModel:
    """An :class:`ExportedModel` for a ``.onnx``, ``.tflite`` or ``.stablehlo`` file written by scripts/export.py.

    ``threads``: CPU threads of onnxruntime / LiteRT (None: their default).
    """
    path = pathlib.Path(path)
    kind = format_of(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported model at {path}")
    if kind == "stablehlo":
        from bisenet_jax.export.stablehlo_model import read_stablehlo
        exported, info = read_stablehlo(path)
        # As evaluation compiles its programs (on an x86 CPU without AVX-512: bisenet_jax/xla_flags.py).
        call = jax.jit(exported.call, compiler_options=xla_flags.inference_options() or None)
        return ExportedModel(path, info, lambda x: np.asarray(call(x)), exported.call)
    if kind == "onnx":
        from bisenet_jax.export.onnx_model import OnnxRunner, read_onnx_info
        info = read_onnx_info(path)
        return ExportedModel(path, info, OnnxRunner(path, threads or 0))
    from bisenet_jax.export.tflite_model import TFLiteRunner, read_tflite_info
    info = read_tflite_info(path)
    return ExportedModel(path, info, TFLiteRunner(path, info, threads))
