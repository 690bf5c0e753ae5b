"""python -m mlic.compare: one row per experiment, with SWA and EMA rows and each task's own metrics, as
Markdown and CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_folders, make_masks, seg_config, single_config, tiny_config

from mlic import SWA, Stage
from mlic.evaluate.compare import aligned, experiment_rows, main, report_tables
from mlic.train.stages import run
from mlic.train.swa import run_swa


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


def test_one_row_per_experiment_and_its_swa_and_ema_rows_from_results_json(experiments: Path, capsys):
    assert main([str(p) for p in sorted(experiments.iterdir())]) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(experiments / "compare.csv")
    assert set(table["experiment"]) == {"plain", "averaged", "averaged (swa)", "averaged (ema)"}
    assert aligned((experiments / "compare.md").read_text().strip()) in out  # the same table, padded
    for name in ("plain", "averaged"):
        row = table[table["experiment"] == name].iloc[0]
        best = json.loads((experiments / name / "results.json").read_text())["models"]["best"]
        tables = report_tables((experiments / name / "report.md").read_text())
        assert row["test/map"] == pytest.approx(best["test"]["map"])
        assert row["test/map"] == pytest.approx(tables["test"]["map"], abs=5e-5)  # report.md says the same
        assert row["valid/auc"] == pytest.approx(best["valid"]["auc"])
        assert row["model"] == "test_resnet" and row["img_size"] == "32x32"
        metrics = pd.read_csv(experiments / name / "metrics.csv")
        assert row["epochs"] == len(metrics)
        assert row["s_per_epoch"] == pytest.approx(metrics["time_s"].mean(), abs=0.06)
    swa = table[table["experiment"] == "averaged (swa)"].iloc[0]
    models = json.loads((experiments / "averaged" / "results.json").read_text())["models"]
    assert set(models) == {"best", "swa", "ema"}
    assert swa["test/map"] == pytest.approx(models["swa"]["test"]["map"])
    tables = report_tables((experiments / "averaged" / "report.md").read_text())
    assert swa["test/map"] == pytest.approx(tables["swa/test"]["map"], abs=5e-5)
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


def test_each_task_gets_its_own_metric_columns_from_results_json(experiments: Path, tmp_path: Path, capsys):
    seg = seg_config(make_masks(tmp_path / "masks", counts=(("train", 8), ("valid", 4), ("test", 4))))
    seg.stages = [Stage("full", epochs=1)]
    single = single_config(
        make_folders(tmp_path / "folders", counts=(("train", 9), ("valid", 6), ("test", 6)))
    )
    single.stages = [Stage("full", epochs=1)]
    for config in (seg, single):
        run(config)
    folders = [experiments / "plain", experiments / "seg", experiments / "single"]
    assert main([str(p) for p in folders] + ["--sort", "valid/iou"]) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(experiments / "compare.csv").set_index("experiment")
    assert table.index[0] == "seg"  # sorted by its IoU; the others have none
    for name, task, metrics in (
        ("plain", "multi_label", ("map", "auc", "f1_micro")),
        ("seg", "segmentation", ("iou", "dice")),
        ("single", "single_label", ("accuracy", "f1_macro")),
    ):
        data = json.loads((experiments / name / "results.json").read_text())
        assert data["task"] == task
        for split in ("valid", "test"):
            for metric in metrics:
                assert table.loc[name, f"{split}/{metric}"] == pytest.approx(
                    data["models"]["best"][split][metric]
                )
    assert table.loc["plain", ["valid/iou", "test/accuracy"]].isna().all()  # no other task's metrics
    assert table.loc["seg", ["valid/map", "valid/accuracy"]].isna().all()
    assert "valid/iou" in out.splitlines()[0] and "valid/map" in out.splitlines()[0]
    assert main([str(experiments / "plain"), "--sort", "valid/iou"]) == 2  # a column none of them has
    assert "is not a column of these experiments" in capsys.readouterr().err


def test_an_experiment_from_before_results_json_is_read_from_its_report(experiments: Path):
    (experiments / "averaged" / "results.json").unlink()
    old = {row["experiment"]: row for row in experiment_rows(experiments / "averaged")}
    tables = report_tables((experiments / "averaged" / "report.md").read_text())
    assert set(old) == {"averaged", "averaged (swa)", "averaged (ema)"}
    assert old["averaged (swa)"]["test/map"] == pytest.approx(tables["swa/test"]["map"])
    assert old["averaged"]["valid/auc"] == pytest.approx(tables["valid"]["auc"])


@pytest.mark.parametrize("damage", [b"\xff\xfe\x00 not text", b"garbage,without\n1,the columns\n"])
def test_a_damaged_metrics_csv_is_noted_and_its_cells_left_empty(dataset: Path, capsys, damage: bytes):
    run(tiny_config(dataset, "plain", stages=[Stage("full", epochs=1)]))
    (Path("experiments/plain") / "metrics.csv").write_bytes(damage)
    assert main(["experiments/plain"]) == 0
    captured = capsys.readouterr()
    assert "note: experiments/plain/metrics.csv " in captured.err
    assert "leaves its epochs and seconds per epoch empty" in captured.err
    row = pd.read_csv("experiments/compare.csv").iloc[0]
    assert pd.isna(row["epochs"]) and pd.isna(row["s_per_epoch"])  # not "0 epochs"
    assert row["valid/map"] > 0  # the rest of the row still comes from the model file
