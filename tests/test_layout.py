"""The package's floors: each part imports only from parts below it (README, Layout), never back up."""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "bisenet_jax"
# Bottom to top, as the README's Layout lists them.
FLOORS = ["xla_flags", "allocator", "paths", "models", "data", "checkpoints", "convert", "evaluation", "train", "export", "benchmarks",
          "cli", "main"]


def _imports(path: pathlib.Path) -> set[str]:
    """Top-level parts of bisenet_jax imported anywhere in the file (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bisenet_jax":
            names = node.module.split(".")[1:2] or [alias.name for alias in node.names]
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("bisenet_jax."))
    return found


def _part(path: pathlib.Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _part(p) != "__init__")


def test_every_part_of_the_package_has_a_floor():
    assert {_part(p) for p in MODULES} == set(FLOORS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_floor_above_its_own(path):
    own = FLOORS.index(_part(path))
    above = sorted(part for part in _imports(path) if FLOORS.index(part) > own)
    assert not above, f"{path.relative_to(PACKAGE)} imports {above}, which sit above {FLOORS[own]!r}"
