"""In Jupyter, fsgen's progress bars (tqdm.auto) are widgets, not the text fallback."""

import importlib.metadata

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

CELL = """\
import torch
from fsgen.models.train import optimize

module = torch.nn.Linear(2, 1)
x = torch.ones(1, 2)
optimize(
    module,
    list(module.parameters()),
    lambda indices: module(x).pow(2).sum(),
    [[0]] * 3,
    lr=0.01,
    warmup_steps=1,
    weight_decay=0.0,
    desc="widget check",
)
"""


def test_jupyterlab_widget_frontend_is_installed():
    assert int(importlib.metadata.version("ipywidgets").split(".")[0]) >= 8
    importlib.metadata.version("jupyterlab_widgets")  # raises if JupyterLab's side is missing


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_training_progress_is_a_widget_in_the_python3_kernel():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    NotebookClient(
        notebook, kernel_name="python3", timeout=90, resources={"metadata": {"path": str(REPO)}}
    ).execute()
    outputs = notebook.cells[0].outputs
    assert any(WIDGET_VIEW in o.get("data", {}) for o in outputs), outputs
    text = "".join(str(o.get("text", "")) + str(o.get("data", {})) for o in outputs)
    assert "IProgress" not in text, text
