"""The notebooks run top to bottom, unedited, against a tiny experiment."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from conftest import make_dataset, tiny_config
from nbclient import NotebookClient

from mlic import LRFinder, Stage
from mlic.train.range_tests import run_lr_find
from mlic.train.stages import run

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
    return run_lr_find(config).exp_dir


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


def test_to_script_notebook_exports_and_predicts_with_plain_torch(tmp_path_factory):
    base = tmp_path_factory.mktemp("to_script")
    dataset = make_dataset(base / "data")
    config_file = base / "config.py"
    config_file.write_text(
        "from mlic import Config, Data, Model, Stage, env_path\n"
        "config = Config(experiment_name='tiny_ts', output_dir=" + repr(str(base / "experiments")) + ",\n"
        "    data=Data(root=env_path('ROOT_PATH'), img_size=(32, 32), batch_size=8, num_workers=0),\n"
        "    model=Model(name='test_resnet', pretrained=False), stages=[Stage('full', epochs=1)],\n"
        "    trainer=dict(accelerator='cpu', enable_progress_bar=False, enable_model_summary=False))\n"
    )
    from mlic.config.loading import load_config

    os.environ["ROOT_PATH"] = str(dataset)
    try:
        exp_dir = run(load_config(config_file)).exp_dir
    finally:
        os.environ.pop("ROOT_PATH", None)
    notebook = execute(
        "to-script.ipynb",
        {
            "MLIC_EXPERIMENT": exp_dir.name,
            "MLIC_EXPERIMENTS_DIR": str(exp_dir.parent),
            "ROOT_PATH": str(dataset),
        },
    )
    assert (exp_dir / "model.ts").is_file()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    table = next(
        o["data"]["text/plain"] for o in outputs if "predicted" in o.get("data", {}).get("text/plain", "")
    )
    assert "Action" in table and "Drama" in table
