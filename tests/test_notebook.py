"""notebooks/inspect_bisenet.ipynb runs top to bottom in a fresh python3 kernel and draws its plots."""
from __future__ import annotations

import os
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "inspect_bisenet.ipynb"


def _kernel_env() -> dict[str, str]:
    """The test process's environment, which carries its persistent JAX compilation cache (see
    conftest), so the kernel reuses compiled programs across runs (initialising the model is the
    slowest cell)."""
    assert os.environ.get("JAX_COMPILATION_CACHE_DIR"), "tests/conftest.py sets the cache for subprocesses"
    return dict(os.environ)


@pytest.fixture(scope="module")
def executed():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Kernel "python3" resolves to the interpreter running the tests; cwd is the repository root.
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO_ROOT)}})
    client.execute(env=_kernel_env())  # raises CellExecutionError on the first failing cell
    return notebook


def _outputs(notebook):
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def _text(notebook) -> str:
    return "".join(output.get("text", "") if output.output_type == "stream" else output.get("data", {}).get("text/plain", "")
                   for output in _outputs(notebook))


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells and all(not cell.outputs and cell.execution_count is None for cell in code_cells), (
        f"{NOTEBOOK} has stored outputs; clear them (the tests execute it) before committing")


def test_notebook_runs_without_errors(executed):
    errors = [output for output in _outputs(executed) if output.output_type == "error"]
    assert not errors, errors[0].get("evalue") if errors else ""
    code_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells)


def test_notebook_draws_its_plots(executed):
    images = [output for output in _outputs(executed) if "image/png" in output.get("data", {})]
    # image and label, features at 1/8 and 1/16, attentions, prediction, ResNet stages
    assert len(images) == 5
    assert all(len(image["data"]["image/png"]) > 1000 for image in images)


def test_notebook_shows_parameters_features_and_costs(executed):
    text = _text(executed)
    assert "13,420,303 parameters" in text  # BiSeNetV1-R18 with the demo dataset's 5 classes
    assert "cp/resnet                 60 tensors      11,176,512" in text  # parameter_table(depth=2)
    assert "logits (1, 128, 160, 5) float32" in text
    for name, shape in [("spatial_path", "(1, 16, 20, 128)"), ("context_1_16", "(1, 8, 10, 128)"),
                        ("cp/arm16/attention", "(1, 1, 1, 128)"), ("ffm/attention", "(1, 1, 1, 256)")]:
        assert f"{name:22s} {shape}" in text
    assert "eval total" in text and "GMACs" in text  # model_summary
