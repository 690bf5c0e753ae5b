"""--resume: an interrupted run continues in its own folder, at the epoch or stage boundary where it
stopped, with its EMA, its early-stopped stages and its final evaluation."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from conftest import tiny_config

from mlic import CheckpointError, ConfigError, Stage
from mlic.models.weights import load_weights
from mlic.train.stages import run


class _PowerCut(L.Callback):
    """Crashes the run as a killed job would stop: at the end of epoch `epoch` of `stage`, after its row
    of metrics.csv and before its checkpoint (Lightning runs checkpoint callbacks last), or with
    `epoch=0` as the stage starts."""

    def __init__(self, stage: str, epoch: int) -> None:
        self.stage, self.epoch = stage, epoch

    def on_train_start(self, trainer, module) -> None:
        if module.stage.name == self.stage and self.epoch == 0:
            raise RuntimeError("power cut")

    def on_train_epoch_end(self, trainer, module) -> None:
        if module.stage.name == self.stage and trainer.current_epoch + 1 == self.epoch:
            raise RuntimeError("power cut")


def test_resume_continues_an_interrupted_run_in_its_own_folder(dataset):
    stages = [Stage("head", epochs=1, freeze_backbone=True), Stage("full", epochs=3)]
    config = tiny_config(dataset, "resumed", stages=stages, callbacks=[_PowerCut("full", 2)])
    with pytest.raises(RuntimeError, match="power cut"):
        run(config)
    exp_dir = config.experiment_dir
    assert (exp_dir / "checkpoints" / "full-last.ckpt").is_file()
    before = pd.read_csv(exp_dir / "metrics.csv")
    # epoch 2's row was written, its checkpoint was not: epoch 2 runs again and its row is replaced
    assert list(zip(before["stage"], before["epoch"])) == [("head", 1), ("full", 1), ("full", 2)]

    config.callbacks = []
    assert run(config, resume=True).exp_dir == exp_dir
    after = pd.read_csv(exp_dir / "metrics.csv")
    assert list(zip(after["stage"], after["epoch"])) == [("head", 1), ("full", 1), ("full", 2), ("full", 3)]
    full = after[after["stage"] == "full"]
    assert full["step"].tolist() == [6, 12, 18]  # the optimizer steps go on from the checkpoint
    set_aside = [p for p in exp_dir.parent.iterdir() if p != exp_dir and not p.name.startswith(".")]
    assert not set_aside  # (hidden: the experiment's lock file, .resumed.lock)
    last = torch.load(exp_dir / "model.last.pth", weights_only=True)["metrics"]
    assert (last["stage"], last["epoch"]) == ("full", 3)
    assert "| test |" in (exp_dir / "report.md").read_text()

    with pytest.raises(ConfigError, match="every stage of resumed has finished"):
        run(config, resume=True)


def test_resume_at_a_stage_boundary_starts_the_next_stage_from_the_last_weights(dataset):
    stages = [Stage("head", epochs=1, freeze_backbone=True), Stage("full", epochs=1)]
    config = tiny_config(dataset, "boundary", stages=stages, callbacks=[_PowerCut("full", 0)])
    with pytest.raises(RuntimeError, match="power cut"):
        run(config)
    head_end = load_weights(config.experiment_dir / "checkpoints" / "head-last.ckpt")
    config.callbacks = []
    config.stages[1] = Stage("full", epochs=1, lr=1e-12)  # so small that the weights barely move
    run(config, resume=True)
    after = pd.read_csv(config.experiment_dir / "metrics.csv")
    assert list(zip(after["stage"], after["epoch"])) == [("head", 1), ("full", 1)]
    final = torch.load(config.experiment_dir / "model.last.pth", weights_only=True)["state_dict"]
    torch.testing.assert_close(final["fc.weight"], head_end["fc.weight"], rtol=0, atol=1e-6)


class _EpochCount(L.Callback):
    def __init__(self) -> None:
        self.epochs = 0

    def on_train_epoch_end(self, trainer, module) -> None:
        self.epochs += 1


@pytest.mark.parametrize("fault", ["deleted", "damaged"])
def test_resume_without_the_last_checkpoint_continues_from_the_latest_epoch_checkpoint(
    dataset, caplog, fault
):
    config = tiny_config(
        dataset, "no_last", stages=[Stage("full", epochs=4)], callbacks=[_PowerCut("full", 4)], save_top_k=5
    )
    with pytest.raises(RuntimeError, match="power cut"):
        run(config)
    checkpoints = config.experiment_dir / "checkpoints"
    last = checkpoints / "full-last.ckpt"
    if fault == "deleted":
        last.unlink()
    else:
        last.write_bytes(last.read_bytes()[:100])  # cut short, as a full disk leaves it
    (checkpoints / "full-epoch02.ckpt").write_bytes(b"damaged too")  # epoch 3's: passed over for epoch 2's
    trained = _EpochCount()
    config.callbacks = [trained]
    run(config, resume=True)
    assert trained.epochs == 2  # only epochs 3 and 4 were trained again
    after = pd.read_csv(config.experiment_dir / "metrics.csv")
    # epochs 1 and 2 kept (not lost to a restart), 3 and 4 run again from epoch 2's checkpoint
    assert list(zip(after["stage"], after["epoch"])) == [("full", e) for e in (1, 2, 3, 4)]
    assert after["step"].tolist() == [6, 12, 18, 24]
    note = next(r.getMessage() for r in caplog.records if "full-last.ckpt is" in r.getMessage())
    assert f"full-last.ckpt is {'missing' if fault == 'deleted' else 'damaged'}" in note
    assert "full-epoch01.ckpt" in note and "(epoch 2)" in note


def test_resume_without_a_run_to_continue_is_an_error(dataset):
    with pytest.raises(
        CheckpointError, match="nothing to resume in experiments/never: it has no metrics.csv"
    ):
        run(tiny_config(dataset, "never"), resume=True)


class _StopEarly(L.Callback):
    """Stops a stage after `epoch` epochs, as EarlyStopping would."""

    def __init__(self, stage: str, epoch: int) -> None:
        self.stage, self.epoch = stage, epoch

    def on_train_epoch_end(self, trainer, module) -> None:
        if module.stage.name == self.stage and trainer.current_epoch + 1 == self.epoch:
            trainer.should_stop = True


def _rows(exp_dir: Path) -> list[tuple[str, int]]:
    df = pd.read_csv(exp_dir / "metrics.csv", dtype={"stage": str})
    return list(zip(df["stage"], df["epoch"]))


def test_resume_skips_a_stage_that_stopped_early_and_keeps_numeric_stage_names(dataset):
    stages = [Stage("1", epochs=3, freeze_backbone=True), Stage("2", epochs=3)]
    config = tiny_config(dataset, "early", stages=stages, callbacks=[_StopEarly("1", 2), _PowerCut("2", 2)])
    with pytest.raises(RuntimeError, match="power cut"):
        run(config)
    config.callbacks = [_StopEarly("1", 2)]
    run(config, resume=True)
    assert _rows(config.experiment_dir) == [("1", 1), ("1", 2), ("2", 1), ("2", 2), ("2", 3)]


def test_resume_continues_the_ema_of_the_weights(dataset):
    from mlic import SWA

    config = tiny_config(
        dataset,
        "ema",
        stages=[Stage("full", epochs=3)],
        swa=SWA(ema_decay=0.9),
        callbacks=[_PowerCut("full", 3)],
    )
    with pytest.raises(RuntimeError, match="power cut"):
        run(config)
    config.callbacks = []
    run(config, resume=True)
    ckpt = torch.load(config.experiment_dir / "checkpoints" / "full-last.ckpt", weights_only=False)
    ema = next(v["ema"] for k, v in ckpt["callbacks"].items() if k.startswith("EMARecorder"))
    assert int(ema["n_averaged"]) == 18  # every step of the 3 epochs, not only those after the resume


def test_resume_after_a_crash_in_the_final_evaluation_writes_the_report(dataset, monkeypatch):
    import mlic.train.stages

    config = tiny_config(dataset, "final", stages=[Stage("full", epochs=1)])
    real = mlic.train.stages.apply_thresholds
    monkeypatch.setattr(
        mlic.train.stages, "apply_thresholds", lambda *a: (_ for _ in ()).throw(RuntimeError("oom"))
    )
    with pytest.raises(RuntimeError, match="oom"):
        run(config)
    assert not (config.experiment_dir / "report.md").exists()
    monkeypatch.setattr(mlic.train.stages, "apply_thresholds", real)
    run(config, resume=True)
    assert (config.experiment_dir / "report.md").is_file() and (
        config.experiment_dir / "thresholds.json"
    ).is_file()
    assert _rows(config.experiment_dir) == [("full", 1)]
