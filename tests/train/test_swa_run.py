"""swa.py end to end: train a tiny model with checkpoints kept, average them, load the result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from conftest import CLASSES, REPO, assert_user_error, make_dataset, train_from_file

from mlic import CheckpointError, ConfigError, Model
from mlic.config.loading import load_config
from mlic.evaluate.report import SECTION
from mlic.models.build import load_checkpoint
from mlic.models.weights import load_weights
from mlic.train.stages import run
from mlic.train.swa import run_swa

CONFIG = """
from mlic import SWA, Config, Data, Model, Stage, env_path

config = Config(
    experiment_name="swa_tiny",
    data=Data(root=env_path("ROOT_PATH"), img_size=(32, 32), batch_size=8, num_workers=0),
    model=Model(name="test_resnet", pretrained=False),
    stages=[Stage("head", epochs=1, freeze_backbone=True, lr=3e-3), Stage("full", epochs=4, lr=3e-3)],
    trainer=dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False),
    swa=SWA(top_k=3, ema_decay=0.9),
    save_top_k=2,
    seed=0,
)
"""


def _swa(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ROOT_PATH": str(folder / "data")}
    return subprocess.run(
        [sys.executable, str(REPO / "swa.py"), *args], cwd=folder, env=env, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny experiment trained once: head 1 epoch, full 4 epochs, the 3 best full checkpoints kept."""
    folder = tmp_path_factory.mktemp("swa")
    train_from_file(folder, CONFIG)
    return folder


def test_swa_cli_writes_a_model_file_that_checkpoint_loading_accepts(trained):
    result = _swa(trained, "config.py")
    assert result.returncode == 0, result.stderr
    exp_dir = trained / "experiments" / "swa_tiny"
    ckpts = sorted((exp_dir / "checkpoints").glob("full-epoch*.ckpt"))
    assert len(ckpts) == 3  # swa.top_k=3 makes the SWA stage keep 3, above save_top_k=2

    swa = torch.load(exp_dir / "model.swa.pth", map_location="cpu", weights_only=True)
    best = torch.load(exp_dir / "model.best.pth", map_location="cpu", weights_only=True)
    assert swa.keys() == best.keys() and swa["classes"] == CLASSES and swa["model_name"] == "test_resnet"
    assert {"valid/map", "test/map"} <= swa["metrics"].keys()

    # it says which model to keep, from valid's monitor, and the numbers it says are the table's
    swa_map, best_map = swa["metrics"]["valid/map"], best["metrics"]["valid/map"]
    verb = "beats" if swa_map > best_map else "does not beat"
    assert f"On valid the average {verb} model.best.pth by valid/map: {swa_map:.4f} against " in result.stdout
    assert ("--weights model.swa.pth" if swa_map > best_map else "keep model.best.pth") in result.stdout

    # weights (not BatchNorm statistics, which are re-estimated) are the mean of the 3 checkpoints
    states = [load_weights(p) for p in ckpts]
    for key in ("conv1.0.weight", "fc.weight", "layer1.0.bn1.weight"):
        expected = torch.stack([s[key] for s in states]).double().mean(0).float()
        torch.testing.assert_close(swa["state_dict"][key], expected, rtol=0, atol=1e-7)
    bn_mean = "layer1.0.bn1.running_mean"
    averaged = torch.stack([s[bn_mean] for s in states]).mean(0)
    assert not torch.allclose(swa["state_dict"][bn_mean], averaged)

    # the same loader `checkpoint=` uses takes it unchanged
    model = timm.create_model("test_resnet", num_classes=len(CLASSES))
    load_checkpoint(model, exp_dir / "model.swa.pth", "test_resnet", CLASSES)
    assert all(torch.equal(v, swa["state_dict"][k]) for k, v in model.state_dict().items())

    # both rows, on stdout and in report.md
    for split in ("best/valid", "best/test", "swa/valid", "swa/test", "ema/test"):
        assert split in result.stdout
    report = (exp_dir / "report.md").read_text()
    assert report.count(SECTION) == 1 and "| swa/test |" in report and "| best/test |" in report
    assert "BatchNorm statistics re-estimated" in report


def test_rerunning_swa_replaces_its_report_section(trained):
    config_path = trained / "config.py"
    os.environ["ROOT_PATH"] = str(trained / "data")
    old = os.getcwd()
    os.chdir(trained)
    try:
        config = load_config(config_path)
        run_swa(config, selection="last", k=2)
        run_swa(config, selection="last", k=2, update_bn=False)
    finally:
        os.environ.pop("ROOT_PATH", None)
        os.chdir(old)
    exp_dir = trained / "experiments" / "swa_tiny"
    assert len(list(exp_dir.glob("model.swa.*.pth"))) >= 1  # earlier averages are set aside, not overwritten
    report = (exp_dir / "report.md").read_text()
    assert report.count(SECTION) == 1
    assert "the last 2 epochs of stage `full`" in report and "not re-estimated" in report
    assert report.index("## Epochs") < report.index(SECTION)  # training's sections are kept


def test_ema_model_is_written_during_training(trained):
    exp_dir = trained / "experiments" / "swa_tiny"
    ema = torch.load(exp_dir / "model.ema.pth", map_location="cpu", weights_only=True)
    last = torch.load(exp_dir / "model.last.pth", map_location="cpu", weights_only=True)
    assert ema["classes"] == CLASSES and ema["metrics"]["ema_decay"] == 0.9
    assert ema["metrics"]["stage"] == "full" and ema["metrics"]["epoch"] == 4
    assert not torch.equal(ema["state_dict"]["fc.weight"], last["state_dict"]["fc.weight"])


def test_too_few_checkpoints_exit_2_and_name_what_exists(trained):
    result = _swa(trained, "config.py", "--stage", "head")
    message = assert_user_error(result)
    assert "1 of stage 'head' (head-epoch00.ckpt)" in message and "3 of other stages" in message
    assert not (trained / "experiments" / "swa_tiny" / "checkpoints" / "head-epoch01.ckpt").exists()


def test_checkpoint_of_another_model_is_refused(trained, tmp_path):
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": timm.create_model("test_efficientnet", num_classes=3).state_dict()}, other)
    exp_dir = trained / "experiments" / "swa_tiny"
    good = sorted((exp_dir / "checkpoints").glob("full-epoch*.ckpt"))[0]
    os.environ["ROOT_PATH"] = str(trained / "data")
    old = os.getcwd()
    os.chdir(trained)
    try:
        config = load_config(trained / "config.py")
        with pytest.raises(
            CheckpointError, match="does not fit the config's model 'test_resnet' with 3 classes"
        ):
            run_swa(config, checkpoints=[good, other])
        with pytest.raises(ConfigError, match="names .*full-epoch.*ckpt twice"):
            run_swa(config, checkpoints=[good, Path("experiments/swa_tiny/checkpoints") / good.name])
        config.model = Model(name="test_efficientnet", pretrained=False)
        with pytest.raises(CheckpointError, match="was trained as 'test_resnet'"):
            run_swa(config)
    finally:
        os.environ.pop("ROOT_PATH", None)
        os.chdir(old)


def test_an_untrained_experiment_is_named(tmp_path):
    (tmp_path / "config.py").write_text(CONFIG)
    make_dataset(tmp_path / "data")
    message = assert_user_error(_swa(tmp_path, "config.py"))
    assert "model.best.pth does not exist: train the experiment first" in message


def test_last_k_keeps_the_last_epochs_of_the_swa_stage(dataset):
    from conftest import tiny_config

    from mlic import SWA, Stage

    config = tiny_config(dataset, "last_k", stages=[Stage("full", epochs=4)], swa=SWA(last_k=2), save_top_k=1)
    exp_dir = run(config).exp_dir
    assert sorted(p.name for p in (exp_dir / "checkpoints").glob("*.ckpt")) == [
        "full-epoch02.ckpt",
        "full-epoch03.ckpt",
        "full-last.ckpt",  # for --resume; never an SWA candidate of its own
    ]
