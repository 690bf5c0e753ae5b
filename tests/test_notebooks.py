"""The notebooks run top to bottom, unedited, against a tiny experiment; a probe cell run after them
reads their figures (titles, colours, axis limits) from the kernel."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import CLASSES, make_dataset, tiny_config
from nbclient import NotebookClient

from mlic import LRFinder, Stage
from mlic.train.range_tests import run_lr_find
from mlic.train.stages import run

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# printed by the probe cell: what each axes of the notebook's last figure (`fig`) shows
PROBE = """
import json
from matplotlib.colors import to_hex
print(json.dumps([
    {"title": ax.get_title(), "color": to_hex(ax.title.get_color()), "ylim": ax.get_ylim()}
    for ax in fig.axes if ax.get_title()
]))
"""


def execute(name: str, env: dict[str, str]) -> tuple[nbformat.NotebookNode, list[dict]]:
    """Run the notebook as it is, then the probe; return the notebook's cells (without the probe) and
    what the probe read."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE))
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
    probe = notebook.cells.pop()
    return notebook, json.loads(probe.outputs[0]["text"])


def outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def printed(notebook: nbformat.NotebookNode, stream: str = "stdout") -> str:
    return "".join(o["text"] for o in outputs(notebook) if o.output_type == "stream" and o.name == stream)


def table(notebook: nbformat.NotebookNode, column: str) -> str:
    """The text of the first displayed table that has `column`."""
    return next(
        o["data"]["text/plain"]
        for o in outputs(notebook)
        if column in o.get("data", {}).get("text/plain", "")
    )


# ---------------------------------------------------------------------------------------------- lrf


@pytest.fixture(scope="module")
def lrf_run(tmp_path_factory) -> tuple[nbformat.NotebookNode, list[dict]]:
    base = tmp_path_factory.mktemp("lrf")
    dataset = make_dataset(base / "data")
    config = tiny_config(
        dataset, "tiny_lrf", stages=[Stage("head", epochs=1, freeze_backbone=True), Stage("full", epochs=1)]
    )
    config.lr_finder = LRFinder(num_steps=20)
    config.output_dir = str(base / "experiments")
    exp_dir = run_lr_find(config).exp_dir
    return execute(
        "lrf.ipynb", {"MLIC_EXPERIMENT": exp_dir.name, "MLIC_EXPERIMENTS_DIR": str(exp_dir.parent)}
    )


def test_lrf_notebook_plots_every_stage_of_an_experiment(lrf_run):
    notebook, axes = lrf_run
    assert any("image/png" in o.get("data", {}) for o in outputs(notebook))
    assert [ax["title"].split("\n")[0] for ax in axes] == ["tiny_lrf: full", "tiny_lrf: head"]
    suggestions = table(notebook, "suggested_lr")
    assert "head" in suggestions and "full" in suggestions


def test_lrf_notebook_prints_no_warning(lrf_run):
    notebook, _ = lrf_run
    assert "Warning" not in printed(notebook, "stderr") + printed(notebook, "stdout")


def test_lrf_notebook_clips_the_y_axis_below_the_divergence_spike(tmp_path):
    """A falling curve that ends in a spike: the y-axis shows the fall, not the spike."""
    lrs = np.logspace(-6, 1, 60)
    smoothed = np.concatenate(
        [np.linspace(1.0, 0.5, 45), np.linspace(0.5, 0.8, 10), [2.0, 5.0, 20.0, 80.0, 300.0]]
    )
    experiment = tmp_path / "experiments" / "spike"
    experiment.mkdir(parents=True)
    curve = pd.DataFrame({"step": range(1, 61), "lr": lrs, "loss": smoothed, "smoothed_loss": smoothed})
    curve.to_csv(experiment / "lr_finder.csv", index=False)
    _, [ax] = execute(
        "lrf.ipynb", {"MLIC_EXPERIMENT": "spike", "MLIC_EXPERIMENTS_DIR": str(experiment.parent)}
    )
    low, high = ax["ylim"]
    assert low < 0.5 and 1.0 < high < 2.0  # the lowest loss and the start inside, the spike above
    assert "clipped" in ax["title"] and "300" in ax["title"]


# ---------------------------------------------------------------------------------------- to-script


@pytest.fixture(scope="module")
def to_script_run(tmp_path_factory) -> tuple[Path, Path, nbformat.NotebookNode, list[dict]]:
    """Train a tiny experiment, run to-script.ipynb on it: (dataset, experiment, notebook, probe)."""
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
    notebook, axes = execute(
        "to-script.ipynb",
        {
            "MLIC_EXPERIMENT": exp_dir.name,
            "MLIC_EXPERIMENTS_DIR": str(exp_dir.parent),
            "ROOT_PATH": str(dataset),
        },
    )
    return dataset, exp_dir, notebook, axes


def test_to_script_notebook_exports_and_predicts_with_plain_torch(to_script_run):
    _, exp_dir, notebook, _ = to_script_run
    assert (exp_dir / "model.ts").is_file()
    assert any("image/png" in o.get("data", {}) for o in outputs(notebook))
    predictions = table(notebook, "predicted")
    assert "true" in predictions and "Action" in predictions and "Drama" in predictions


def test_to_script_notebook_prints_no_warning(to_script_run):
    _, _, notebook, _ = to_script_run
    assert "Warning" not in printed(notebook, "stderr") + printed(notebook, "stdout")


def test_to_script_notebook_prints_the_class_key(to_script_run):
    _, _, notebook, _ = to_script_run
    assert ", ".join(f"{i} {c}" for i, c in enumerate(CLASSES)) in printed(notebook)


def test_to_script_notebook_titles_show_true_and_predicted_classes(to_script_run):
    dataset, _, _, axes = to_script_run
    valid = pd.read_csv(dataset / "valid_df.csv").head(len(axes))
    expected = [", ".join(c for c in CLASSES if row[c]) for _, row in valid.iterrows()]
    assert len(axes) == 8
    true, predicted = zip(*(ax["title"].split("\n") for ax in axes))
    assert [t.removeprefix("true: ") for t in true] == expected
    assert all(p.startswith("predicted: ") for p in predicted)


def test_to_script_notebook_titles_wrong_predictions_in_red(to_script_run):
    *_, axes = to_script_run
    for ax in axes:
        true, predicted = (line.split(": ", 1)[1] for line in ax["title"].split("\n"))
        wrong = set(true.split(", ")) != set(predicted.split(", "))
        assert ax["color"] == ("#ff0000" if wrong else "#000000"), ax["title"]
