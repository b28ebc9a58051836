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


TEST_JAX_CACHE = os.environ.get("BISENET_TEST_JAX_CACHE",
                                str(pathlib.Path.home() / ".cache" / "bisenet_jax" / "jax_tests"))
# Least recently used programs are evicted beyond this (JAX's own LRU cache): one full run writes ~0.5 GB.
TEST_JAX_CACHE_MAX_BYTES = 2 * 1024**3


def pytest_configure(config):
    """A persistent XLA compilation cache outside the repository: later runs (and the resume tests,
    which compile the same step twice) reuse compiled programs.

    The tests' subprocesses (training CLIs, float64 comparisons in a fresh interpreter) inherit it
    through the environment JAX reads at start-up. A run of several processes joined by
    jax.distributed gets a cache of its own instead (tests/gcs/test_multiprocess_training.py,
    tests/evaluation/test_eval_multiprocess.py): its processes must all find, or all miss, a program."""
    import jax

    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", TEST_JAX_CACHE)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(TEST_JAX_CACHE_MAX_BYTES))
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
    jax.config.update("jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]))


def pytest_collection_modifyitems(config, items):
    """The tests marked ``slow`` (minutes each, most of them several processes or float64 compiles) run
    first: under ``pytest -n 2`` the workers then end on short tests together, instead of one or two
    long tests running alone at the end of the suite (that tail was ~10 of its 25 minutes)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order otherwise
