"""The notebooks run top to bottom, unedited, against a tiny experiment."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from conftest import make_dataset, tiny_config
from nbclient import NotebookClient

from mlic import LRFinder, Stage
from mlic.stages import run

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, env: dict[str, str]) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(
            notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
        ).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return notebook


@pytest.fixture(scope="module")
def lrf_experiment(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("lrf")
    dataset = make_dataset(base / "data")
    config = tiny_config(
        dataset, "tiny_lrf", stages=[Stage("head", epochs=1, freeze_backbone=True), Stage("full", epochs=1)]
    )
    config.lr_finder = LRFinder(num_steps=20)
    config.output_dir = str(base / "experiments")
    return run(config)


def test_lrf_notebook_plots_every_stage_of_an_experiment(lrf_experiment):
    notebook = execute(
        "lrf.ipynb",
        {"MLIC_EXPERIMENT": lrf_experiment.name, "MLIC_EXPERIMENTS_DIR": str(lrf_experiment.parent)},
    )
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    table = next(
        o["data"]["text/plain"] for o in outputs if "suggested_lr" in o.get("data", {}).get("text/plain", "")
    )
    assert "head" in table and "full" in table
