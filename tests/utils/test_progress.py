"""The long steps a user waits on show progress on a terminal, as training does, and stay out of logs."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_dataset, tiny_config

from mlic import Stage
from mlic.data.loaders import verify_images
from mlic.data.tables import read_splits
from mlic.deploy.predict import predict_paths
from mlic.experiment.checkpoints import load_model_file
from mlic.train.stages import run
from mlic.train.swa import reestimate_bn


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def on_terminal(monkeypatch: pytest.MonkeyPatch) -> Terminal:
    """stderr as a terminal, for the rest of the test (set inside the test: pytest's capture replaces
    sys.stderr again between a fixture's setup and the test)."""
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    return screen


def test_image_checks_and_batchnorm_reestimation_show_a_bar(dataset: Path, monkeypatch):
    tables = read_splits(tiny_config(dataset).data)
    terminal = on_terminal(monkeypatch)
    verify_images(tables)
    assert "checking images" in terminal.getvalue() and "/96 " in terminal.getvalue()

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    batches = [(torch.randn(4, 3, 8, 8), torch.zeros(4, 3)) for _ in range(5)]
    reestimate_bn(model, batches)
    assert "BatchNorm re-estimation" in terminal.getvalue() and "/5 " in terminal.getvalue()


def test_predict_over_a_folder_counts_images(tmp_path: Path, monkeypatch):
    data = make_dataset(tmp_path / "data", n_train=16, n_valid=8, n_test=8)
    config = tiny_config(data, "bar", stages=[Stage("full", epochs=1)])
    exp_dir = run(config).exp_dir
    paths = sorted((data / "Images").glob("*.jpg"))[:10]
    terminal = on_terminal(monkeypatch)
    df = predict_paths(load_model_file(exp_dir / "model.best.pth"), paths, np.full(3, 0.5), batch_size=4)
    assert len(df) == 10
    assert "predicting" in terminal.getvalue() and "/10 " in terminal.getvalue()


def test_no_bar_off_a_terminal_or_when_the_config_turns_bars_off(dataset: Path, monkeypatch, capsys):
    tables = read_splits(tiny_config(dataset).data)
    verify_images(tables)  # stderr is pytest's capture: not a terminal
    assert "checking images" not in capsys.readouterr().err
    screen = on_terminal(monkeypatch)
    verify_images(tables, show_progress=False)
    assert screen.getvalue() == ""


def test_a_log_line_written_while_a_bar_is_shown_gets_a_line_of_its_own():
    import io
    import logging

    from tqdm import tqdm

    from mlic.utils.cli import BarSafeHandler

    stream = io.StringIO()
    bar = tqdm(total=10, file=stream, ascii=True, mininterval=0)
    bar.update(3)
    handler = BarSafeHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.emit(logging.LogRecord("mlic", logging.INFO, __file__, 0, "a log line", None, None))
    bar.close()
    lines = [line.strip() for line in stream.getvalue().replace("\r", "\n").split("\n")]
    assert "INFO a log line" in lines  # not glued to the bar's text
