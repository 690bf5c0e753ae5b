"""What `--lr-find`, `config.lr_finder` and `Stage(lr="find")` leave in the experiment folder, and that
a stage trains with the LR its range test suggests."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_dataset, start_cli_cases, tiny_config

from mlic import ConfigError, LRFinder, Stage
from mlic.engine.lr_curve import RangeTest, signal, smooth, suggest
from mlic.train import range_tests
from mlic.train.range_tests import run_lr_find
from mlic.train.stages import run


def _read_curve(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, float_precision="round_trip")


# ----------------------------------------------------------------------- --lr-find on the command line

CONFIG_TEXT = """from mlic import Config, Data, LRFinder, Model, Stage

config = Config(
    experiment_name="{name}",
    data=Data(root="data", img_size=(32, 32), batch_size=8, num_workers=0),
    model=Model(name="test_resnet", pretrained=False),
    stages={stages},
    trainer=dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False),
)
"""
TWO_STAGES = (
    '[Stage("head", epochs=1, freeze_backbone=True, lr=LRFinder(num_steps=20)), '
    'Stage("full", epochs=1, lr=LRFinder(num_steps=20))]'
)


def _cli_case(name: str, stages: str):
    def setup(folder: Path) -> list[str]:
        make_dataset(folder / "data", n_train=24, n_valid=8, n_test=8)
        (folder / f"{name}.py").write_text(CONFIG_TEXT.format(name=name, stages=stages))
        return [f"{name}.py", "--lr-find"]

    return setup


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    yield from start_cli_cases({"lrf_two": _cli_case("lrf_two", TWO_STAGES)}, tmp_path_factory)


def test_lr_find_cli_writes_a_curve_per_stage_a_report_and_nothing_else(cli):
    """A one-stage config writes `lr_finder.csv` instead: see the `find_then_numeric` runs below."""
    case, suffixes = "lrf_two", ["_head", "_full"]
    folder, result = cli(case)
    assert result.returncode == 0, result.stderr
    exp_dir = folder / "experiments" / case
    assert sorted(p.name for p in exp_dir.glob("lr_finder*.csv")) == sorted(
        f"lr_finder{s}.csv" for s in suffixes
    )
    report = (exp_dir / "report.md").read_text()
    for suffix in suffixes:
        curve = _read_curve(exp_dir / f"lr_finder{suffix}.csv")
        assert list(curve.columns) == ["step", "lr", "loss", "smoothed_loss"]
        assert 5 <= len(curve) <= 20
        assert curve["step"].tolist() == list(range(1, len(curve) + 1))
        assert (np.diff(curve["lr"]) > 0).all()
        assert curve["lr"].iloc[0] == pytest.approx(LRFinder().start_lr)
        assert (exp_dir / f"lr_finder{suffix}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        lr = suggest(curve["lr"], curve["smoothed_loss"])
        assert lr is not None
        assert f"{lr:.2e}" in report
        assert f"lr_finder{suffix}.png" in report
        stage = suffix.lstrip("_") or "full"
        line = re.search(
            rf"LR range test, stage {stage}: (\d+) steps in \d+\.\d s.*; suggested LR (\S+)", result.stdout
        )
        assert line, result.stdout
        assert int(line.group(1)) == len(curve) and line.group(2) == f"{lr:.2e}"
    assert not (exp_dir / "checkpoints").exists()
    assert not list(exp_dir.rglob("*.pth")) and not list(exp_dir.rglob("*.ckpt"))
    assert not (exp_dir / "metrics.csv").exists()


# ------------------------------------------------------------------------ config.lr_finder, lr="find"


def test_config_lr_finder_runs_only_the_range_test(dataset):
    config = tiny_config(dataset, "only_test", lr_finder=LRFinder(num_steps=10))
    with pytest.raises(ConfigError, match=r"trains nothing: run it with run_lr_find\(config\)"):
        run(config)  # a training run of a range-test config says which function runs it
    exp_dir = run_lr_find(config).exp_dir
    assert sorted(p.name for p in exp_dir.glob("lr_finder*")) == [
        "lr_finder_full.csv",
        "lr_finder_full.png",
        "lr_finder_head.csv",
        "lr_finder_head.png",
    ]
    for stage in ("head", "full"):
        assert len(_read_curve(exp_dir / f"lr_finder_{stage}.csv")) <= 10
    assert not (exp_dir / "metrics.csv").exists()
    assert not (exp_dir / "checkpoints").exists()
    assert not list(exp_dir.rglob("*.pth"))
    assert "LR range test" in (exp_dir / "report.md").read_text()


class _FirstBatch(L.Callback):
    """The weights at fit start, and the weights, batch and LRs at the first training batch."""

    def __init__(self) -> None:
        self.at_fit_start: dict[str, torch.Tensor] = {}
        self.first: dict[str, Any] = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        self.at_fit_start = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.first:
            self.first = {
                "weights": {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()},
                "x": batch[0].detach().clone(),
                "lrs": {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups},
            }


@pytest.fixture(scope="module")
def find_then_numeric(tmp_path_factory):
    """The same config twice: the stage's lr from a range test, then that number given directly."""
    base = tmp_path_factory.mktemp("find")
    dataset = make_dataset(base / "data", n_train=24, n_valid=8, n_test=8)

    def config(name: str, lr, recorder: _FirstBatch):
        c = tiny_config(
            dataset,
            name,
            stages=[Stage("full", epochs=1, lr=lr, backbone_lr_scale=0.1)],
            scheduler=None,
            callbacks=[recorder],
        )
        c.output_dir = str(base / "experiments")
        return c

    found, numeric = _FirstBatch(), _FirstBatch()
    find_dir = run(config("find", LRFinder(num_steps=20), found)).exp_dir
    assert [p.name for p in find_dir.glob("lr_finder*.csv")] == ["lr_finder.csv"]  # one stage tested
    curve = _read_curve(find_dir / "lr_finder.csv")
    lr = suggest(curve["lr"], curve["smoothed_loss"])
    numeric_dir = run(config("numeric", lr, numeric)).exp_dir
    return {"find": (find_dir, found), "numeric": (numeric_dir, numeric), "lr": lr}


def test_stage_lr_find_trains_with_the_suggestion(find_then_numeric):
    exp_dir, _ = find_then_numeric["find"]
    lr = find_then_numeric["lr"]
    row = pd.read_csv(exp_dir / "metrics.csv", float_precision="round_trip").iloc[0]
    assert row["lr_head"] == pytest.approx(lr, rel=1e-12)
    assert row["lr_backbone"] == pytest.approx(lr * 0.1, rel=1e-12)
    assert f"{lr:.2e}" in (exp_dir / "report.md").read_text()
    assert (exp_dir / "model.best.pth").exists()


def test_the_range_test_leaves_the_stage_starting_weights_and_first_batch_unchanged(find_then_numeric):
    _, found = find_then_numeric["find"]
    _, numeric = find_then_numeric["numeric"]
    assert found.at_fit_start.keys() == numeric.at_fit_start.keys()
    for name, tensor in numeric.at_fit_start.items():
        assert torch.equal(found.at_fit_start[name], tensor), name
    for name, tensor in numeric.first["weights"].items():
        assert torch.equal(found.first["weights"][name], tensor), name
    assert torch.equal(found.first["x"], numeric.first["x"])  # same shuffle: the RNG was restored
    assert found.first["lrs"] == numeric.first["lrs"]


def test_training_after_a_range_test_is_bit_identical_to_training_without_one(find_then_numeric):
    find_dir, _ = find_then_numeric["find"]
    numeric_dir, _ = find_then_numeric["numeric"]
    a = torch.load(find_dir / "model.last.pth", weights_only=True)["state_dict"]
    b = torch.load(numeric_dir / "model.last.pth", weights_only=True)["state_dict"]
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name
    columns = ["epoch", "step", "lr_head", "lr_backbone", "train/loss", "valid/loss", "valid/map"]
    metrics = [pd.read_csv(d / "metrics.csv")[columns] for d in (find_dir, numeric_dir)]
    pd.testing.assert_frame_equal(*metrics)


# ---------------------------------------------------------------------------------------------- GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_lr_find_runs_on_the_gpu(dataset):
    config = tiny_config(dataset, "gpu", stages=[Stage("full", epochs=1, lr=LRFinder(num_steps=10))])
    config.trainer["accelerator"] = "auto"
    exp_dir = run_lr_find(config).exp_dir
    assert len(_read_curve(exp_dir / "lr_finder.csv")) > 0


# --------------------------------------------------------- a range test without signal, or a noisy one

FLAT = pd.read_csv(Path(__file__).parents[1] / "fixtures" / "lr_range_flat.csv")


def _stage_lr_with(monkeypatch, result: RangeTest) -> Stage:
    """What `Stage(lr="find")` trains with when its range test records `result` (optimizer lr 2e-3)."""
    monkeypatch.setattr(range_tests, "stage_range_test", lambda *args, **kwargs: result)
    param = torch.zeros(1, requires_grad=True)
    module = SimpleNamespace(build_optimizer=lambda: torch.optim.AdamW([param], lr=2e-3))
    return range_tests.stage_lr(None, SimpleNamespace(module=module), Stage("full", 1, lr="find"), "")[0]


def test_a_stage_whose_range_test_saw_no_fall_keeps_the_optimizers_lr_and_says_what_would_help(
    monkeypatch, caplog
):
    lrs, raw = list(FLAT["lr"]), list(FLAT["loss"])
    smoothed = list(smooth(lrs, raw))
    flat = RangeTest(lrs=lrs, losses=raw, smoothed=smoothed, signal=signal(lrs, raw, smoothed))
    with caplog.at_level("WARNING", logger="mlic"):
        stage = _stage_lr_with(monkeypatch, flat)
    assert stage.lr == 2e-3
    (message,) = [r.getMessage() for r in caplog.records]
    assert "no LR suggestion for stage full: the loss did not fall by more than its noise" in message
    assert "it trains with the optimizer's lr 2.00e-03" in message
    assert "more steps (LRFinder(num_steps=300))" in message and "a pretrained start" in message


def test_a_suggestion_above_the_lr_of_the_lowest_raw_loss_is_taken_with_a_warning(monkeypatch, caplog):
    lrs = list(np.geomspace(1e-5, 1e-1, 41))
    raw = list(1 + (np.log10(lrs) + 2) ** 2)  # lowest at 1e-2
    curve = RangeTest(lrs=lrs, losses=raw, smoothed=raw, suggestion=9e-2, signal=signal(lrs, raw, raw))
    with caplog.at_level("WARNING", logger="mlic"):
        stage = _stage_lr_with(monkeypatch, curve)
    assert stage.lr == 9e-2
    (message,) = [r.getMessage() for r in caplog.records]
    assert "takes the suggested LR 9.00e-02, 9.0x above the LR of the lowest raw loss (1.00e-02)" in message
