"""Shared test fixtures: the in-repository reference material and the real CamVid data."""
from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The PyTorch key layouts and golden logits live in the repository (tests/reference/README.md), so
# parity is checked on every clone; only the real-CamVid tests depend on data outside it.
REFERENCE_DIR = pathlib.Path(__file__).resolve().parent / "reference"
CAMVID_DEFAULT = REPO_ROOT.parent / "shared" / "data" / "camvid"


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
    """tests/reference: pytorch_bisenetv{1,2}_state_dict.txt and golden/ (never skipped)."""
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def camvid_root() -> pathlib.Path:
    root = pathlib.Path(os.environ.get("BISENET_CAMVID_ROOT", CAMVID_DEFAULT))
    if not (root / "train").is_dir() or not (root / "trainannot").is_dir():
        pytest.skip(f"real CamVid not found at {root} (set BISENET_CAMVID_ROOT to the SegNet CamVid folder)")
    return root


def pytest_configure(config):
    """A persistent XLA compilation cache outside the repository: later runs (and the resume tests,
    which compile the same step twice) reuse compiled programs."""
    import jax

    cache = os.environ.get("BISENET_TEST_JAX_CACHE", str(pathlib.Path.home() / ".cache" / "bisenet_jax" / "jax_tests"))
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_collection_modifyitems(config, items):
    """The tests marked ``slow`` (minutes each, most of them several processes or float64 compiles) run
    first: under ``pytest -n 2`` the workers then end on short tests together, instead of one or two
    long tests running alone at the end of the suite (that tail was ~10 of its 25 minutes)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order otherwise
