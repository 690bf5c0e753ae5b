"""sweep.py: a hyperparameter sweep from the config on Optuna, each trial a normal experiment, resumable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import make_masks, seg_config

from mlic import ConfigError, load_config
from mlic.train.sweep import run_sweep

REPO = Path(__file__).resolve().parents[2]


def write_config(
    folder: Path, data: Path, epochs: int = 1, space: str | None = None, pruner: str = "None"
) -> Path:
    space = space or "{'optimizer.lr': loguniform(1e-4, 1e-2)}"
    path = folder / "sweep_config.py"
    path.write_text(
        "from mlic import Config, Data, Model, Stage, Sweep, choice, loguniform\n"
        f"config = Config(experiment_name='tiny', data=Data(root={str(data)!r}, img_size=(32, 32), batch_size=8, "
        "num_workers=0), model=Model(name='test_resnet', pretrained=False), "
        f"stages=[Stage('full', epochs={epochs})], seed=0, "
        "trainer=dict(accelerator='cpu', enable_progress_bar=False, enable_model_summary=False), "
        f"sweep=Sweep(n_trials=3, space={space}, pruner={pruner}))\n"
    )
    return path


def test_sweep_py_runs_each_trial_as_an_experiment_and_reports_the_best(dataset: Path, tmp_path: Path):
    path = write_config(
        tmp_path, dataset, space="{'optimizer.lr': loguniform(1e-4, 1e-2), 'data.batch_size': choice([4, 8])}"
    )
    done = subprocess.run(
        [sys.executable, str(REPO / "sweep.py"), str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    folder = Path("experiments/tiny_sweep")
    trials = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert trials == ["tiny_trial000", "tiny_trial001", "tiny_trial002"]
    table = pd.read_csv(folder / "sweep.csv")
    assert table["state"].tolist() == ["COMPLETE"] * 3
    assert table["params_optimizer.lr"].nunique() == 3
    for _, row in table.iterrows():
        exp = folder / row["user_attrs_experiment"]
        saved = (exp / "config.py").read_text()
        assert f"optimizer.lr={row['params_optimizer.lr']!r}" in saved  # the copy reproduces the trial
        metrics = pd.read_csv(exp / "metrics.csv")
        assert len(metrics) == 1 and metrics["step"].iloc[0] == 48 // row["params_data.batch_size"]
        assert row["value"] == pytest.approx(float(metrics["valid/map"].max()), abs=1e-4)
    best = table.loc[table["value"].idxmax()]
    assert f"best trial: {int(best['number'])}," in done.stdout
    assert f"--set optimizer.lr={float(best['params_optimizer.lr'])!r}" in done.stdout
    compare = pd.read_csv(folder / "compare.csv")
    assert set(compare["experiment"]) == set(trials)


def test_a_stopped_sweep_continues_and_marks_the_interrupted_trial_failed(dataset: Path, tmp_path: Path):
    config = load_config(write_config(tmp_path, dataset))
    first = run_sweep(config, n_trials=2)
    assert len(first.study.trials) == 2
    study = optuna.load_study(
        study_name="tiny", storage=f"sqlite:///{(first.folder / 'optuna.db').resolve()}"
    )
    study.ask()  # a trial that was running when the sweep was killed
    again = run_sweep(load_config(write_config(tmp_path, dataset)))
    states = [t.state for t in again.study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3  # one more trial ran, not three
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    assert len([p for p in again.folder.iterdir() if p.is_dir()]) == 3


def test_pruned_trials_stop_after_the_epoch_the_pruner_rejects(dataset: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(
        optuna.pruners, "MedianPruner", lambda **kw: optuna.pruners.ThresholdPruner(lower=2.0)
    )
    config = load_config(write_config(tmp_path, dataset, epochs=3, pruner="'median'"))
    outcome = run_sweep(config, n_trials=2)
    assert [t.state for t in outcome.study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert outcome.best_number is None
    for t in outcome.study.trials:
        metrics = pd.read_csv(outcome.folder / f"tiny_trial{t.number:03d}" / "metrics.csv")
        assert len(metrics) == 1  # stopped after its first epoch of three


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("{'optimizer.learning_rate': loguniform(1e-4, 1e-2)}", "names 'optimizer.learning_rate'"),
        ("{'data.batchsize': choice([4, 8])}", "names 'data.batchsize'"),
        ("{'optimizer.lr': loguniform(1e-2, 1e-4)}", "needs low < high"),
        ("{'optimizer.lr': 1e-3}", "must be loguniform"),
    ],
)
def test_a_bad_search_space_is_one_sentence(dataset: Path, tmp_path: Path, space: str, message: str):
    with pytest.raises(ConfigError, match="sweep.space.*" + message.replace("(", r"\(").replace("[", r"\[")):
        load_config(write_config(tmp_path, dataset, space=space))


def test_a_segmentation_sweep_scores_and_compares_its_trials_on_valid_iou(tmp_path: Path):
    from mlic import Stage, Sweep, loguniform

    config = seg_config(make_masks(tmp_path / "masks", counts=(("train", 8), ("valid", 4))))
    config.data.test = None
    config.stages = [Stage("full", epochs=1)]
    config.sweep = Sweep(
        space={"optimizer.lr": loguniform(1e-3, 1e-2)}, n_trials=1, metric="valid/iou", pruner=None
    )
    outcome = run_sweep(config)
    assert outcome.best_number == 0
    table = pd.read_csv(outcome.folder / "compare.csv")
    assert list(table["experiment"]) == ["seg_trial000"]
    assert table["valid/iou"].iloc[0] == pytest.approx(outcome.best_value)
    assert "valid/map" not in table.columns  # a segmentation trial has no mAP
