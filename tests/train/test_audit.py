"""The label audit (`python -m mlic.audit`): confident learning ranks planted label errors first, on
probabilities and end to end on a tiny image set (k-fold models, resumable), with its CSV, report.md
section and report.html thumbnails; bad input is one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_dataset, seg_config

from mlic.data.stratify import stratified_folds
from mlic.data.tables import LabelTable
from mlic.train.audit import main, run_audit, warn_if_memorised
from mlic.utils.errors import ConfigError


def test_folds_hold_every_row_once_and_each_class_in_every_fold():
    targets = (np.random.default_rng(0).random((90, 4)) < 0.3).astype(float)
    folds = stratified_folds(targets, 3, seed=5)
    assert sorted(np.concatenate(folds).tolist()) == list(range(90))
    for held in folds:
        assert (targets[held].sum(0) > 0).all()
    again = stratified_folds(targets, 3, seed=5)
    assert all((a == b).all() for a, b in zip(folds, again))


# A config as a user writes it, with one callback that stops the second fold's first run after an epoch
# (as a Ctrl-C would), so the second audit shows that it resumes.
CONFIG = """
import os
from pathlib import Path
import lightning as L
from mlic import Config, Data, Model, Stage
from mlic.utils.errors import Interrupted

class StopFoldTwoOnce(L.Callback):
    def on_train_epoch_end(self, trainer, module):
        marker = Path("stopped-once")
        if Path(trainer.default_root_dir).name == "fold-2" and not marker.exists():
            marker.touch()
            raise Interrupted("SIGINT")  # what train.py's signal handler raises on Ctrl-C

config = Config(
    experiment_name="noisy",
    data=Data(root=os.environ["ROOT_PATH"], img_size=(32, 32), batch_size=8, num_workers=0),
    model=Model(name="test_resnet", pretrained=False, freeze_bn=False),
    stages=[Stage("full", epochs=8, lr=3e-3)],
    monitor="valid/loss",  # valid mAP reaches 1.0 within an epoch here; the loss keeps choosing
    callbacks=[StopFoldTwoOnce()],
    trainer=dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False),
    seed=0,
)
"""

FLIPS = [(3, "Action"), (10, "Comedy"), (20, "Drama"), (40, "Action")]


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny set whose train labels have 4 planted errors, and an experiment trained on it."""
    import os

    from mlic.config.loading import load_config
    from mlic.train.stages import run

    folder = tmp_path_factory.mktemp("audit")
    root = make_dataset(folder / "data", n_train=192, n_valid=32, n_test=16)
    train = pd.read_csv(root / "train_df.csv")
    for row, cls in FLIPS:
        train.loc[row, cls] = 1 - train.loc[row, cls]
    train.to_csv(root / "train_df.csv", index=False)
    (folder / "config.py").write_text(CONFIG)
    old = os.getcwd()
    os.chdir(folder)
    os.environ["ROOT_PATH"] = str(root)
    try:
        run(load_config(folder / "config.py"))
    finally:
        os.chdir(old)
    return folder


def test_the_audit_finds_the_planted_errors_and_resumes_an_interrupted_fold(noisy, monkeypatch, capsys):
    monkeypatch.chdir(noisy)
    monkeypatch.setenv("ROOT_PATH", str(noisy / "data"))
    exp_dir = Path("experiments/noisy")
    train = pd.read_csv("data/train_df.csv")
    expected = {(train.Id[row], cls) for row, cls in FLIPS}

    assert main([str(exp_dir), "--folds", "2"]) == 130  # fold 2 stopped after its first epoch
    assert "interrupted (SIGINT); files already written are kept" in capsys.readouterr().err
    fold_1 = (exp_dir / "audit" / "fold-1.csv").read_text()
    assert not (exp_dir / "audit" / "fold-2.csv").exists()
    assert not (exp_dir / "label_audit.csv").exists()

    assert main([str(exp_dir), "--folds", "2"]) == 0
    out = capsys.readouterr().out
    assert (exp_dir / "audit" / "fold-1.csv").read_text() == fold_1  # kept, not trained again
    epochs = pd.read_csv(exp_dir / "audit" / "fold-2" / "metrics.csv")["epoch"].tolist()
    assert epochs == list(range(1, 9))  # the interrupted run went on from its first epoch, once each
    assert "train: the model disagrees with" in out and "wrote experiments/noisy/label_audit.csv" in out

    audit = pd.read_csv(exp_dir / "label_audit.csv", dtype={"id": str})
    assert list(audit.columns) == [
        "rank", "split", "id", "class", "given_label", "probability", "score", "flagged", "row_score", "image"
    ]  # fmt: skip
    top = audit[(audit["split"] == "train") & (audit["rank"] <= len(FLIPS))]
    assert set(zip(top["id"], top["class"])) == expected
    assert top["flagged"].sum() >= len(FLIPS) // 2  # confident learning is stricter than the ranking
    for r in top.to_dict("records"):  # the label given is the flipped one, and the model says the other
        assert r["given_label"] == train.loc[train.Id == r["id"], r["class"]].item()
        assert (r["probability"] > 0.5) != bool(r["given_label"])

    report = (exp_dir / "report.md").read_text()
    assert report.count("## Label audit") == 1
    assert all(f"| {i} | {c} |" in report for i, c in expected)
    html = (exp_dir / "report.html").read_text()
    section = html[html.index('id="label-audit"') :]
    for i, _ in expected:
        assert f'data-id="{i}"' in section
    assert section.count('src="data:image/jpeg;base64,') >= len(FLIPS)

    # a third run trains nothing, and writes the same table and one section
    stamp = (exp_dir / "audit" / "fold-2" / "metrics.csv").stat().st_mtime_ns
    assert main([str(exp_dir), "--folds", "2"]) == 0
    assert (exp_dir / "audit" / "fold-2" / "metrics.csv").stat().st_mtime_ns == stamp
    assert pd.read_csv(exp_dir / "label_audit.csv", dtype={"id": str}).equals(audit)
    assert (exp_dir / "report.md").read_text().count("## Label audit") == 1
    assert not (exp_dir / "audit" / "fold-2" / "checkpoints").exists()  # kept only until the fold's end


def test_bad_audit_input_is_one_sentence(noisy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROOT_PATH", str(noisy / "data"))
    monkeypatch.chdir(noisy)
    assert main(["experiments/noisy", "--folds", "1"]) == 2
    assert (
        "--folds must be 0 (the experiment's model) or between 2 and the 192 train rows, got 1"
        in capsys.readouterr().err
    )
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "has no config.py: is it an experiment folder?" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="the label audit is for classification"):
        run_audit(tmp_path, config=seg_config(tmp_path))
    with pytest.raises(SystemExit):
        main(["experiments/noisy", "--epochs", "0"])
    assert "--epochs must be at least 1" in capsys.readouterr().err
    assert json.loads((noisy / "experiments/noisy/classes.json").read_text()) == ["Action", "Comedy", "Drama"]


def test_folds_0_audits_with_the_experiment_s_own_model_and_trains_nothing(noisy, monkeypatch, capsys):
    monkeypatch.chdir(noisy)
    monkeypatch.setenv("ROOT_PATH", str(noisy / "data"))
    exp_dir = Path("experiments/noisy")
    before = sorted(p.name for p in (exp_dir / "audit").glob("*")) if (exp_dir / "audit").exists() else []
    assert main([str(exp_dir), "--folds", "0"]) == 0
    out = capsys.readouterr().out
    assert "probabilities from the experiment's model, which trained on them" in out
    after = sorted(p.name for p in (exp_dir / "audit").glob("*")) if (exp_dir / "audit").exists() else []
    assert after == before  # no fold model
    audit = pd.read_csv(exp_dir / "label_audit.csv", dtype={"id": str})
    train = pd.read_csv("data/train_df.csv")
    top = audit[(audit["split"] == "train") & (audit["rank"] <= len(FLIPS))]
    assert set(zip(top["id"], top["class"])) == {(train.Id[row], cls) for row, cls in FLIPS}


def test_a_model_that_fitted_its_train_labels_is_named_with_folds_0(caplog):
    rng = np.random.default_rng(0)
    targets = (rng.random((50, 3)) < 0.3).astype(float)
    tables = {
        s: LabelTable(Path(s), np.arange(50), np.array(["x"] * 50), targets, ["a", "b", "c"])
        for s in ("train", "valid")
    }
    fitted = np.where(targets == 1, 0.999, 0.001)  # the train labels learned, every one
    unsure = np.where(targets == 1, 0.7, 0.2)
    with caplog.at_level("WARNING", logger="mlic"):
        warn_if_memorised({"train": fitted, "valid": unsure}, tables, multi_label=True)
    assert "it has fitted its train labels, wrong ones too" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mlic"):
        warn_if_memorised({"train": unsure * 0.9 + 0.05, "valid": unsure}, tables, multi_label=True)
    assert caplog.text == ""
