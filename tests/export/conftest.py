"""Fixtures for the export tests: random-weight models, each format exported once per session, JAX
reference logits computed once per model and size."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from bisenet_jax.export import export_variables
from bisenet_jax.export.exporter import reference_logits

NUM_CLASSES = 5  # the demo dataset's, so the files carry its classes and normalisation
CHECKPOINT_INFO = {"num_classes": NUM_CLASSES, "dataset": "demo"}


class Models:
    """Random variables per model, exported files per (format, model, size), JAX logits per input."""

    num_classes = NUM_CLASSES

    def __init__(self, root: pathlib.Path, random_variables):
        self.root = root
        self.random_variables = random_variables  # tests/conftest.py's make_random_variables
        self._variables: dict[str, dict] = {}
        self._files: dict[tuple, pathlib.Path] = {}
        self._logits: dict[tuple, np.ndarray] = {}

    def variables(self, model_name: str) -> dict:
        if model_name not in self._variables:
            self._variables[model_name] = self.random_variables(model_name, NUM_CLASSES, seed=11)
        return self._variables[model_name]

    def exported(self, fmt: str, model_name: str, size: tuple[int, int] | None = None) -> pathlib.Path:
        """The model exported as ``fmt`` (fixed ``size`` or dynamic), without the exporter's own check."""
        key = (fmt, model_name, size)
        if key not in self._files:
            name = f"{model_name}_{'dynamic' if size is None else '%dx%d' % size}.{fmt}"
            export_variables(self.variables(model_name), {"model_name": model_name, **CHECKPOINT_INFO}, fmt,
                             self.root / name, size=size, check=False)
            self._files[key] = self.root / name
        return self._files[key]

    def images(self, batch: int, height: int, width: int) -> np.ndarray:
        return np.random.default_rng(height * 1000 + width).standard_normal((batch, height, width, 3)).astype(np.float32)

    @staticmethod
    def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
        """max |actual - expected| / max |expected|."""
        return float(np.abs(actual - expected).max() / np.abs(expected).max())

    def jax_logits(self, model_name: str, batch: int, height: int, width: int) -> np.ndarray:
        key = (model_name, batch, height, width)
        if key not in self._logits:
            self._logits[key] = reference_logits(model_name, NUM_CLASSES, self.variables(model_name),
                                                 self.images(batch, height, width))
        return self._logits[key]


@pytest.fixture(scope="session")
def models(tmp_path_factory, random_variables) -> Models:
    return Models(tmp_path_factory.mktemp("exported"), random_variables)
