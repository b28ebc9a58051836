"""Shared test fixtures: the in-repository reference material, the real CamVid data, files loaded by
path (the scripts, the reference's weight reader) and random model variables."""
from __future__ import annotations

import importlib.util
import os
import pathlib

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "scripts"
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


def load_module(path: str | pathlib.Path, name: str | None = None):
    """The module of a Python file that is not part of a package, executed afresh on every call (tests
    monkeypatch what they load). The scripts and the reference's ``make_weights.py`` are loaded this way."""
    path = pathlib.Path(path)
    spec = importlib.util.spec_from_file_location(name or f"loaded_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_script():
    """``load_script("benchmark_train")``: scripts/benchmark_train.py as a module, to call its ``main``."""
    def load(name: str):
        path = SCRIPTS / f"{name}.py"
        if not path.is_file():
            raise FileNotFoundError(f"no script {path}")
        return load_module(path, f"{name}_script")
    return load


@pytest.fixture(scope="session")
def make_weights(reference_dir):
    """tests/reference/golden/make_weights.py: the reference's state_dict, rebuilt from its key layout."""
    return load_module(reference_dir / "golden" / "make_weights.py", "make_weights")


def make_random_variables(model_name: str, num_classes: int = 19, seed: int = 0, aux_heads: bool = True) -> dict:
    """Variables of ``model_name`` drawn in numpy from the shapes alone (no slow ``init``).

    Kernels are He-normal (fan_out); BN scales, shifts and running statistics are randomised so that no
    BatchNorm is the identity (a transposed or misplaced statistic would show in the logits).
    """
    from flax import traverse_util  # imported here: this file loads before pytest_configure sets up JAX

    from bisenet_jax.convert import model_template

    rng = np.random.default_rng(seed)
    template = model_template(model_name, num_classes, aux_heads)

    def draw(path, shape):
        if path[-1] == "kernel":  # He normal over fan_out, the models' own init (HWIO: kh * kw * out)
            return rng.standard_normal(shape) * np.sqrt(2.0 / (shape[0] * shape[1] * shape[3]))
        if path[-1] == "scale":
            return 1.0 + 0.2 * rng.standard_normal(shape)
        if path[-1] in ("bias", "mean"):
            return 0.1 * rng.standard_normal(shape)
        if path[-1] == "var":
            return 0.5 + rng.random(shape)
        raise AssertionError(path)

    return {collection: traverse_util.unflatten_dict(
        {path: draw(path, leaf.shape).astype(np.float32)
         for path, leaf in traverse_util.flatten_dict(template[collection]).items()})
        for collection in ("params", "batch_stats")}


@pytest.fixture(scope="session")
def random_variables():
    """``make_random_variables``, for the conversion and export tests."""
    return make_random_variables


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
