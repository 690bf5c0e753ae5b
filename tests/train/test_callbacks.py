"""Atomic checkpoint writes (the CheckpointIO plugin every stage's Trainer gets), and a library that
leaves the process alone: no prints, no warning filters changed by importing it."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_config
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mlic import Stage
from mlic.data.images import Preprocessing
from mlic.train.callbacks import AtomicCheckpointIO, ExperimentRecorder, stage_jump
from mlic.train.stages import make_trainer, run


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full")  # what a write that fails halfway looks like to the caller


def test_a_checkpoint_that_fails_to_save_leaves_the_earlier_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "checkpoints" / "full-last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2, "x": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["full-last.ckpt"]


def test_every_stage_trainer_writes_checkpoints_atomically_unless_the_config_brings_its_own(
    dataset, tmp_path
):
    config = tiny_config(dataset, "plugin")
    prep = Preprocessing((32, 32), (0.5,) * 3, (0.5,) * 3, "bilinear")
    recorder = ExperimentRecorder(tmp_path, config, ["a"], prep)
    trainer = make_trainer(config, Stage("full", epochs=1), tmp_path, recorder)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    own = TorchCheckpointIO()
    config.trainer["plugins"] = [own]
    assert make_trainer(config, Stage("full", epochs=1), tmp_path, recorder).strategy.checkpoint_io is own


def test_training_prints_nothing_and_leaves_no_temporary_files(dataset, capsys):
    exp_dir = run(tiny_config(dataset, "quiet", stages=[Stage("full", epochs=2)])).exp_dir
    assert capsys.readouterr().out == ""  # the CLIs print; the library returns what they print
    assert sorted(p.name for p in (exp_dir / "checkpoints").iterdir() if p.name.startswith(".")) == []
    assert not list(Path(exp_dir).glob(".*.tmp"))


def test_importing_mlic_changes_no_warning_filter_and_no_matplotlib_backend():
    code = (
        "import warnings, matplotlib\n"
        "import albumentations, cv2, lightning, pandas, PIL, sklearn.metrics, timm, torch, tqdm  # theirs\n"
        "import mlxtend.data, torch.onnx\n"
        "before, backend = list(warnings.filters), matplotlib.get_backend()\n"
        "import mlic, mlic.train.stages, mlic.train.swa, mlic.deploy.export, mlic.deploy.predict, mlic.evaluate.report, mlic.train.lr_finder\n"
        "assert warnings.filters == before, 'warning filters changed'\n"
        "assert matplotlib.get_backend() == backend, 'backend changed'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr


def _row(stage: str, epoch: int, valid_loss: float) -> dict:
    return {"stage": stage, "epoch": epoch, "valid/loss": valid_loss}


def test_a_stage_whose_first_epoch_ends_far_above_the_stage_before_is_named_with_what_to_try():
    rows = [_row("head", 1, 0.30), _row("head", 2, 0.25), _row("full", 1, 3.39)]
    note = stage_jump(rows, lr=1.1e-1)
    assert note is not None
    assert "stage full's first epoch at lr 1.10e-01 ended with valid loss 3.3900" in note
    assert "13.6x stage head's last (0.2500)" in note
    assert "try a lower lr for stage full" in note


@pytest.mark.parametrize(
    "rows",
    [
        [_row("head", 1, 0.30), _row("head", 2, 0.25), _row("full", 1, 0.28)],  # a normal start
        # a one-cycle warm-up at a high LR that recovers (recorded on the icons set): 1.7x is not far
        [_row("head", 1, 0.340), _row("full", 1, 0.575)],
        [_row("head", 1, 0.30), _row("head", 2, 3.0)],  # within one stage: not a stage boundary
        [_row("full", 1, 3.0)],  # the first stage has nothing to compare with
        [_row("head", 1, 0.30), _row("full", 1, float("nan"))],  # no finite loss to compare
    ],
)
def test_a_normal_stage_start_gets_no_note(rows):
    assert stage_jump(rows) is None


def test_a_stage_that_wrecks_the_one_before_is_named_in_the_log_and_the_report(dataset, caplog):
    stages = [Stage("head", epochs=1, freeze_backbone=True, lr=1e-3), Stage("full", epochs=1, lr=50.0)]
    config = tiny_config(dataset, "wreck", stages, optimizer=partial(torch.optim.SGD, lr=1e-3))
    with caplog.at_level("WARNING", logger="mlic"):
        run(config)
    notes = [r.getMessage() for r in caplog.records if "undoes what stage head learned" in r.getMessage()]
    assert len(notes) == 1 and notes[0].startswith(
        "stage full's first epoch at lr 5.00e+01 ended with valid loss"
    )
    report = (config.experiment_dir / "report.md").read_text()
    assert "## Warnings" in report and notes[0] in report


def test_the_progress_bar_names_the_stage_and_counts_its_epochs_from_one_of_its_total(dataset, capsys):
    config = tiny_config(dataset, "bar", stages=[Stage("full", epochs=2)])
    config.trainer = dict(config.trainer, enable_progress_bar=True)
    run(config)
    captured = capsys.readouterr()
    bar = (captured.out + captured.err).replace("\r", "\n")
    assert "full: epoch 1/2" in bar and "full: epoch 2/2" in bar  # metrics.csv's epochs 1 and 2
    assert "epoch 3/" not in bar
