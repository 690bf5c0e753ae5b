"""python -m mlic.compare: one row per experiment, with SWA and EMA rows, as Markdown and CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_config

from mlic import SWA, Stage
from mlic.compare import main, report_tables
from mlic.stages import run
from mlic.swa import run_swa


@pytest.fixture
def experiments(dataset: Path) -> Path:
    """Two tiny experiments in experiments/: one plain, one with EMA and swa.py run on it."""
    run(tiny_config(dataset, "plain", stages=[Stage("full", epochs=1)]))
    averaged = tiny_config(
        dataset, "averaged", stages=[Stage("full", epochs=3)], swa=SWA(top_k=2, ema_decay=0.9)
    )
    run(averaged)
    run_swa(averaged)
    return Path("experiments")


def test_one_row_per_experiment_and_its_swa_and_ema_rows_from_the_reports(experiments: Path, capsys):
    assert main([str(p) for p in sorted(experiments.iterdir())]) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(experiments / "compare.csv")
    assert set(table["experiment"]) == {"plain", "averaged", "averaged (swa)", "averaged (ema)"}
    assert (experiments / "compare.md").read_text().strip() in out
    for name in ("plain", "averaged"):
        row = table[table["experiment"] == name].iloc[0]
        tables = report_tables((experiments / name / "report.md").read_text())
        assert row["test/map"] == pytest.approx(tables["test"]["map"])
        assert row["valid/auc"] == pytest.approx(tables["valid"]["auc"])
        assert row["model"] == "test_resnet" and row["img_size"] == "32x32"
        metrics = pd.read_csv(experiments / name / "metrics.csv")
        assert row["epochs"] == len(metrics)
        assert row["s_per_epoch"] == pytest.approx(metrics["time_s"].mean(), abs=0.06)
    swa = table[table["experiment"] == "averaged (swa)"].iloc[0]
    tables = report_tables((experiments / "averaged" / "report.md").read_text())
    assert swa["test/map"] == pytest.approx(tables["swa/test"]["map"])
    assert list(table["valid/map"]) == sorted(table["valid/map"], reverse=True)  # best first


def test_folders_that_are_not_experiments_are_passed_over_and_none_is_an_error(experiments: Path, capsys):
    (experiments / "notes").mkdir()
    (experiments / "notes.txt").write_text("x")
    assert main([str(experiments / "plain"), str(experiments / "notes"), str(experiments / "notes.txt")]) == 0
    assert "skipped experiments/notes: no model.best.pth" in capsys.readouterr().err
    assert main([str(experiments / "notes")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: none of the 1 path(s) given is a trained experiment folder")
    assert len(err.strip().splitlines()) == 1
