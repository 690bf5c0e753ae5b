"""End to end: head → full on a tiny generated dataset, and what a user checks in the experiment folder."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import CLASSES, tiny_config

from mlic import Model, Stage
from mlic.data.images import ImageTransform
from mlic.data.loaders import make_loader
from mlic.data.tables import read_splits
from mlic.evaluate.evaluation import probabilities
from mlic.metrics.classification import multilabel_metrics
from mlic.models.build import head_parameter_names, preprocessing
from mlic.train.stages import run


def _probs(model: torch.nn.Module, loader) -> np.ndarray:
    """Probabilities of `model` in eval mode over the (images, targets) batches of `loader`."""
    model.eval()
    return np.concatenate([probabilities(model, x) for x, _ in loader])


def _init_weights(tmp_path: Path) -> Path:
    """A local 'pretrained' backbone file, as timm's weights would be (no classifier)."""
    torch.manual_seed(1)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    path = tmp_path / "init.pth"
    torch.save(model.state_dict(), path)
    return path


def _staged_config(dataset: Path, init: Path, name: str = "staged"):
    return tiny_config(
        dataset,
        name,
        stages=[Stage("head", epochs=2, freeze_backbone=True, lr=3e-3), Stage("full", epochs=3, lr=3e-3)],
        model=Model(name="test_resnet", pretrained=str(init)),
    )


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """One staged training shared by the tests below: (experiment folder, dataset, init weights)."""
    from conftest import make_dataset

    base = tmp_path_factory.mktemp("staged")
    dataset = make_dataset(base / "data", n_train=64, n_valid=32, n_test=32)
    init = _init_weights(base)
    config = _staged_config(dataset, init)
    config.output_dir = str(base / "experiments")
    exp_dir = run(config).exp_dir
    return exp_dir, dataset, init


def test_every_artifact_exists_and_loads(staged_run):
    exp_dir, _, _ = staged_run
    assert json.loads((exp_dir / "classes.json").read_text()) == CLASSES
    assert "experiment_name='staged'" in (exp_dir / "config.py").read_text()
    for name in ("model.best.pth", "model.last.pth"):
        saved = torch.load(exp_dir / name, weights_only=True)
        assert set(saved) >= {"state_dict", "model_name", "classes", "img_size", "normalization", "metrics"}
        model = timm.create_model(saved["model_name"], num_classes=len(saved["classes"]))
        model.load_state_dict(saved["state_dict"])
    checkpoints = sorted((exp_dir / "checkpoints").glob("*.ckpt"))
    assert checkpoints and not list((exp_dir / "checkpoints").glob(".*.tmp"))
    assert "state_dict" in torch.load(checkpoints[0], weights_only=False)
    report = (exp_dir / "report.md").read_text()
    assert "| test |" in report and "curves.png" in report
    assert (exp_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_metrics_csv_has_one_row_per_epoch_per_stage(staged_run):
    exp_dir, _, _ = staged_run
    metrics = pd.read_csv(exp_dir / "metrics.csv")
    assert metrics["stage"].tolist() == ["head", "head", "full", "full", "full"]
    assert metrics["epoch"].tolist() == [1, 2, 1, 2, 3]
    for column in ("train/loss", "valid/loss", "valid/map", "valid/auc", "valid/f1_micro", "valid/f1_macro"):
        assert metrics[column].notna().all(), column


def _checkpoint_state(exp_dir: Path, stage: str) -> dict[str, torch.Tensor]:
    path = sorted((exp_dir / "checkpoints").glob(f"{stage}-*.ckpt"))[-1]
    state = torch.load(path, weights_only=False)["state_dict"]
    return {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}


def test_head_stage_changes_only_head_weights(staged_run):
    exp_dir, _, init = staged_run
    initial = torch.load(init, weights_only=True)
    after_head = _checkpoint_state(exp_dir, "head")
    model = timm.create_model("test_resnet", num_classes=len(CLASSES))
    head = head_parameter_names(model)
    assert head == {"fc.weight", "fc.bias"}
    for name, tensor in initial.items():  # parameters and BatchNorm statistics alike
        assert torch.equal(after_head[name], tensor), f"{name} changed in the head stage"
    fresh = model.state_dict()
    assert any(not torch.equal(after_head[n], fresh[n]) for n in head)


def test_full_stage_changes_the_backbone(staged_run):
    exp_dir, _, init = staged_run
    initial = torch.load(init, weights_only=True)
    after_full = _checkpoint_state(exp_dir, "full")
    changed = [n for n, t in initial.items() if t.is_floating_point() and not torch.equal(after_full[n], t)]
    assert len(changed) > len(initial) // 2


def test_training_beats_the_untrained_model_on_valid(staged_run):
    exp_dir, dataset, init = staged_run
    config = _staged_config(dataset, init)
    tables = read_splits(config.data)
    model = timm.create_model("test_resnet", num_classes=len(CLASSES))
    model.load_state_dict(torch.load(init, weights_only=True), strict=False)
    L.seed_everything(0)
    model.reset_classifier(len(CLASSES))
    prep = preprocessing(model, config.data.img_size)
    loader = make_loader(tables["valid"], prep.transform(), config.data, train=False)
    untrained = multilabel_metrics(_probs(model, loader), tables["valid"].targets)["map"]
    trained = torch.load(exp_dir / "model.best.pth", weights_only=True)["metrics"]["valid/map"]
    assert trained > untrained + 0.05, (trained, untrained)


def test_monitor_picks_the_best_epoch_across_stages(staged_run):
    exp_dir, _, _ = staged_run
    metrics = pd.read_csv(exp_dir / "metrics.csv")
    best = torch.load(exp_dir / "model.best.pth", weights_only=True)["metrics"]
    assert best["valid/map"] == pytest.approx(metrics["valid/map"].max())
    row = metrics.loc[metrics["valid/map"].idxmax()]
    assert (best["stage"], best["epoch"]) == (row["stage"], row["epoch"])


class _RecordStart(L.Callback):
    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        self.state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}


def test_training_from_a_checkpoint_starts_with_its_weights(dataset):
    head = tiny_config(dataset, "train_only_head", stages=[Stage("head", epochs=1, freeze_backbone=True)])
    run(head)
    recorder = _RecordStart()
    full = tiny_config(
        dataset,
        "train_full",
        stages=[Stage("full", epochs=1)],
        model=Model(
            name="test_resnet", pretrained=False, checkpoint="experiments/train_only_head/model.best.pth"
        ),
        callbacks=[recorder],
    )
    run(full)
    saved = torch.load("experiments/train_only_head/model.best.pth", weights_only=True)["state_dict"]
    assert saved.keys() == recorder.state.keys()
    for name, tensor in saved.items():
        assert torch.equal(recorder.state[name], tensor), name


def test_checkpoint_with_other_classes_recreates_the_head(dataset, caplog):
    run(tiny_config(dataset, "first", stages=[Stage("head", epochs=1, freeze_backbone=True)]))
    path = Path("experiments/first/model.best.pth")
    saved = torch.load(path, weights_only=True)
    saved["classes"] = ["x", "y"]
    saved["state_dict"]["fc.weight"] = saved["state_dict"]["fc.weight"][:2]
    saved["state_dict"]["fc.bias"] = saved["state_dict"]["fc.bias"][:2]
    torch.save(saved, "other.pth")
    recorder = _RecordStart()
    config = tiny_config(
        dataset,
        "second",
        stages=[Stage("full", epochs=1)],
        model=Model(name="test_resnet", pretrained=False, checkpoint="other.pth"),
        callbacks=[recorder],
    )
    with caplog.at_level("WARNING", logger="mlic"):
        run(config)
    assert "head is re-created" in caplog.text
    assert recorder.state["fc.weight"].shape[0] == len(CLASSES)
    assert torch.equal(recorder.state["conv1.0.weight"], saved["state_dict"]["conv1.0.weight"])


class _CountBatches(L.Callback):
    def __init__(self) -> None:
        self.per_epoch: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.per_epoch.append(0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.per_epoch[-1] += 1


def test_num_iteration_on_epoch_gives_exactly_that_many_batches_with_workers(dataset):
    counter = _CountBatches()
    config = tiny_config(dataset, "iterations", stages=[Stage("full", epochs=2)], callbacks=[counter])
    config.data.num_iteration_on_epoch = 7
    config.data.num_workers = 2
    run(config)
    assert counter.per_epoch == [7, 7]
    assert pd.read_csv("experiments/iterations/metrics.csv")["step"].tolist() == [7, 14]


def test_discriminative_lrs_give_the_backbone_a_smaller_lr(dataset):
    config = tiny_config(dataset, "disc", stages=[Stage("full", epochs=1, lr=1e-3, backbone_lr_scale=0.1)])
    config.scheduler = None
    config.optimizer = partial(torch.optim.SGD, lr=0.5)
    run(config)
    row = pd.read_csv("experiments/disc/metrics.csv").iloc[0]
    assert row["lr_head"] == pytest.approx(1e-3)
    assert row["lr_backbone"] == pytest.approx(1e-4)


def test_rerun_keeps_the_earlier_run(dataset):
    config = tiny_config(dataset, "again", stages=[Stage("full", epochs=1)])
    run(config)
    first = Path("experiments/again/metrics.csv").read_text()
    run(config)
    earlier = [p for p in Path("experiments").iterdir() if p.name.startswith("again.")]
    assert len(earlier) == 1 and (earlier[0] / "metrics.csv").read_text() == first


def test_lightning_ckpt_with_another_class_count_recreates_the_head(dataset, caplog):
    run(tiny_config(dataset, "first", stages=[Stage("head", epochs=1, freeze_backbone=True)]))
    ckpt = sorted(Path("experiments/first/checkpoints").glob("*.ckpt"))[0]
    saved = torch.load(ckpt, weights_only=False)
    saved["state_dict"]["model.fc.weight"] = saved["state_dict"]["model.fc.weight"][:2]
    saved["state_dict"]["model.fc.bias"] = saved["state_dict"]["model.fc.bias"][:2]
    torch.save(saved, "two_classes.ckpt")
    config = tiny_config(
        dataset,
        "from_ckpt",
        stages=[Stage("full", epochs=1)],
        model=Model(name="test_resnet", pretrained=False, checkpoint="two_classes.ckpt"),
    )
    with caplog.at_level("WARNING", logger="mlic"):
        run(config)
    assert "head is re-created" in caplog.text


def _best_model_probs(exp_dir: Path, dataset: Path, init: Path, split: str):
    """Probabilities of model.best.pth on `split`, computed outside the training loop."""
    config = _staged_config(dataset, init)
    tables = read_splits(config.data)
    saved = torch.load(exp_dir / "model.best.pth", weights_only=True)
    model = timm.create_model("test_resnet", num_classes=len(CLASSES))
    model.load_state_dict(saved["state_dict"])
    norm = saved["normalization"]
    transform = ImageTransform(tuple(saved["img_size"]), norm["mean"], norm["std"])
    loader = make_loader(tables[split], transform, config.data, train=False)
    return _probs(model, loader), tables[split].targets.astype(int), saved


def test_logged_map_and_f1_agree_with_scikit_learn(staged_run):
    from sklearn.metrics import average_precision_score, f1_score

    exp_dir, dataset, init = staged_run
    probs, targets, saved = _best_model_probs(exp_dir, dataset, init, "valid")
    logged = saved["metrics"]  # what the training loop computed and logged for that epoch
    assert abs(logged["valid/map"] - average_precision_score(targets, probs, average="macro")) < 1e-6
    preds = (probs >= 0.5).astype(int)
    assert abs(logged["valid/f1_micro"] - f1_score(targets, preds, average="micro", zero_division=0)) < 1e-6
    assert abs(logged["valid/f1_macro"] - f1_score(targets, preds, average="macro", zero_division=0)) < 1e-6


def test_thresholds_are_tuned_on_valid_and_reported_per_class(staged_run):
    from sklearn.metrics import f1_score

    exp_dir, dataset, init = staged_run
    thresholds = json.loads((exp_dir / "thresholds.json").read_text())
    assert list(thresholds) == CLASSES and all(0 <= t <= 1 for t in thresholds.values())
    probs, targets, _ = _best_model_probs(exp_dir, dataset, init, "valid")
    tuned = (probs >= [thresholds[c] for c in CLASSES]).astype(int)
    for c in range(len(CLASSES)):  # per class, never below the global threshold on the split tuned on
        assert f1_score(targets[:, c], tuned[:, c]) >= f1_score(targets[:, c], (probs[:, c] >= 0.5))
    report = (exp_dir / "report.md").read_text()
    assert "| valid | " in report and "f1_macro_tuned" in report
    assert "## Per class" in report and "| class | train support | valid support | test support |" in report
    for name in CLASSES:
        assert f"| {name} | " in report
    assert (exp_dir / "per_class_ap.png").read_bytes()[:4] == b"\x89PNG"
