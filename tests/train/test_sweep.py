"""sweep.py: a hyperparameter sweep from the config on Optuna, each trial a normal experiment, resumable."""

from __future__ import annotations

import os
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
    folder: Path,
    data: Path,
    epochs: int = 1,
    space: str | None = None,
    pruner: str = "None",
    model: str = "Model(name='test_resnet', pretrained=False)",
) -> Path:
    space = space or "{'optimizer.lr': loguniform(1e-4, 1e-2)}"
    path = folder / "sweep_config.py"
    path.write_text(
        "from mlic import Config, Data, Model, Stage, Sweep, choice, intrange, loguniform\n"
        f"config = Config(experiment_name='tiny', data=Data(root={str(data)!r}, img_size=(32, 32), batch_size=8, "
        f"num_workers=0), model={model}, "
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
    table = pd.read_csv(outcome.folder / "sweep.csv")
    assert table["user_attrs_experiment"].tolist() == ["tiny_trial000", "tiny_trial001"]  # their folders
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
        ("{'data.batch_size': intrange(0, 8)}", "cannot take at 0: .*batch_size"),
        ("{'model.name': choice(['test_resnet', 7])}", "cannot take at 7: .*model.name"),
    ],
)
def test_a_bad_search_space_is_one_sentence(dataset: Path, tmp_path: Path, space: str, message: str):
    pattern = "sweep.space.*" + message.replace("(", r"\(").replace("[", r"\[")
    with pytest.raises(ConfigError, match=pattern):
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


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            "Model(name='test_resnet', pretrained=False, checkpoint='experiments/head/model.best.pth')",
            "model.best.pth does not exist",
        ),
        ("Model(name='test_resnet', pretrained='weights/resnet.pth')", "resnet.pth"),
    ],
    ids=["checkpoint", "pretrained"],
)
def test_a_missing_weights_file_stops_the_sweep_before_its_first_trial(
    dataset: Path, tmp_path: Path, model: str, message: str
):
    path = write_config(tmp_path, dataset, model=model)
    done = subprocess.run(
        [sys.executable, str(REPO / "sweep.py"), str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert not Path("experiments/tiny_sweep").exists()  # no study, so no failed trial recorded


def test_the_demo_sweep_runs_end_to_end_on_a_small_demo(tmp_path: Path):
    from mlic.demo.build import build_demo

    data = tmp_path / "demo"
    build_demo(data, seed=0, n_train=60, n_valid=20, n_test=20, model_name="test_resnet", pretrain_epochs=1)
    shrink = [
        "model.name='test_resnet'",
        f"model.pretrained={str(data / 'pretrained_test_resnet.pth')!r}",
        "data.num_workers=0",
        "data.batch_size=20",
        "stages.full.epochs=1",
        "trainer.enable_progress_bar=False",
    ]
    done = subprocess.run(
        [sys.executable, str(REPO / "sweep.py"), str(REPO / "configs/sweep_demo.py"), "--n-trials", "2"]
        + [arg for item in shrink for arg in ("--set", item)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ROOT_PATH": str(data), "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    alarms = [
        line
        for line in done.stderr.splitlines()
        if "WARNING" in line and "have no positives" not in line  # the small demo's rare genres
    ]
    assert not alarms, done.stderr[-3000:]
    folder = Path("experiments/sweep_demo_sweep")
    table = pd.read_csv(folder / "sweep.csv")
    assert table["state"].tolist() == ["COMPLETE"] * 2
    assert set(table.columns) >= {"params_optimizer.lr", "params_optimizer.weight_decay"}
    for name in table["user_attrs_experiment"]:
        assert len(pd.read_csv(folder / name / "metrics.csv")) == 1
        assert not list((folder / name).glob("lr_finder*"))  # the sweep draws the LR: no range test
    assert "best trial:" in done.stdout
