"""Config(loggers=[...]): the loggers people already use get the same per-epoch metrics as metrics.csv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_config
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mlic import ConfigError, Stage
from mlic.config.validation import validate
from mlic.train.stages import run


def test_tensorboard_event_files_hold_every_row_of_metrics_csv(dataset: Path, tmp_path: Path):
    stages = [Stage("head", epochs=1, freeze_backbone=True), Stage("full", epochs=2)]
    config = tiny_config(dataset, "tb", stages=stages)
    config.loggers = [TensorBoardLogger(str(tmp_path / "tb"), name="tiny")]
    exp_dir = run(config).exp_dir
    metrics = pd.read_csv(exp_dir / "metrics.csv")
    events = list((tmp_path / "tb" / "tiny").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file was written"
    board = EventAccumulator(str(events[0].parent))
    board.Reload()
    for column in ("train/loss", "valid/loss", "valid/map", "lr_head"):
        points = board.Scalars(column)
        assert [p.step for p in points] == list(range(1, len(metrics) + 1)), column
        assert [p.value for p in points] == pytest.approx(metrics[column].tolist(), rel=1e-6), column


def test_a_csv_logger_beside_mlic_gets_the_same_rows(dataset: Path, tmp_path: Path):
    config = tiny_config(dataset, "csv", stages=[Stage("full", epochs=2)])
    config.loggers = [CSVLogger(str(tmp_path / "theirs"), name="run")]
    exp_dir = run(config).exp_dir
    ours = pd.read_csv(exp_dir / "metrics.csv")
    theirs = pd.read_csv(next((tmp_path / "theirs").rglob("metrics.csv")))
    assert theirs["valid/map"].tolist() == pytest.approx(ours["valid/map"].tolist())


def test_something_that_is_not_a_logger_is_one_sentence(dataset: Path):
    config = tiny_config(dataset)
    config.loggers = ["tensorboard"]
    with pytest.raises(ConfigError, match=r"field 'loggers\[0\]' is a str, not a Lightning logger"):
        validate(config)
