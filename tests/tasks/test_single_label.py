"""Single-label classification (`task="single_label"`): class folders and CSVs, softmax metrics, the
staged run end to end (report, confusion matrix, --test, export, predict) and the mistakes a user makes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SINGLE_CLASSES, assert_user_error, make_folders, single_config, train_cli
from sklearn.metrics import accuracy_score, f1_score, top_k_accuracy_score

from mlic import Data
from mlic.config.loading import load_config
from mlic.data.tables import read_splits
from mlic.deploy.export import export_experiment, run_exported
from mlic.deploy.predict import predict_paths
from mlic.evaluate.evaluation import evaluate_split
from mlic.experiment.checkpoints import load_model_file
from mlic.tasks.single_label import SingleLabel
from mlic.train.stages import run
from mlic.utils.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("single")
    root = make_folders(base / "data")
    config = single_config(root)
    config.output_dir = str(base / "experiments")
    return run(config), config, root


# ------------------------------------------------------------------------------------------ metrics


def test_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(8), size=200)
    labels = rng.integers(0, 8, size=200)
    labels[:20] = probs[:20].argmax(1)  # some right, so the scores are not all at chance
    targets = np.eye(8)[labels]
    got = SingleLabel().metrics(probs, targets, 0.5)
    assert got["accuracy"] == pytest.approx(accuracy_score(labels, probs.argmax(1)))
    assert got["top5_accuracy"] == pytest.approx(top_k_accuracy_score(labels, probs, k=5, labels=range(8)))
    assert got["f1_macro"] == pytest.approx(f1_score(labels, probs.argmax(1), average="macro"))
    assert "top5_accuracy" not in SingleLabel().metrics(probs[:, :5], targets[:, :5], 0.5)


# ------------------------------------------------------------------------------------------- labels


def test_class_folders_give_one_class_per_image_in_train_order(tmp_path):
    root = make_folders(tmp_path / "data", counts=(("train", 9), ("valid", 6), ("test", 3)))
    tables = read_splits(single_config(root).data, task="single_label")
    assert tables["train"].classes == sorted(SINGLE_CLASSES)
    for table in tables.values():
        assert (table.targets.sum(1) == 1).all()
        for path, row in zip(table.paths, table.targets):
            assert Path(path).parent.name == table.classes[int(row.argmax())]
    assert tables["test"].targets.sum(0).tolist() == [1, 1, 1]


def test_a_csv_with_one_class_name_per_row(tmp_path):
    root = make_folders(tmp_path / "data", counts=(("train", 6), ("valid", 3), ("test", 3)))
    (root / "Images").mkdir()
    rows = {}
    for split in ("train", "valid"):
        rows[split] = []
        for path in sorted((root / split).glob("*/*.png")):
            image_id = f"{split}_{path.stem}"
            path.rename(root / "Images" / f"{image_id}.png")
            rows[split].append({"Id": image_id, "label": path.parent.name})
        pd.DataFrame(rows[split]).to_csv(root / f"{split}.csv", index=False)
    data = Data(
        root=str(root),
        train="train.csv",
        valid="valid.csv",
        test=None,
        label_column="label",
        image_pattern="{id}.png",
    )
    tables = read_splits(data, task="single_label")
    got = [tables["valid"].classes[i] for i in tables["valid"].targets.argmax(1)]
    assert got == [r["label"] for r in rows["valid"]]


def test_a_onehot_row_with_two_classes_names_the_row(tmp_path):
    from conftest import make_dataset

    root = make_dataset(tmp_path / "data")  # multi-label: some rows have several classes
    df = pd.read_csv(root / "train_df.csv")
    first = int(np.flatnonzero(df.iloc[:, 1:].sum(1).to_numpy() != 1)[0])
    with pytest.raises(DataError, match=rf"train_df.csv, row {first + 2}: .* exactly one per row"):
        read_splits(Data(root=str(root)), task="single_label")


# ----------------------------------------------------------------------------------------- training


def test_training_learns_and_writes_every_artifact(trained):
    outcome, config, _ = trained
    exp_dir = outcome.exp_dir
    metrics = pd.read_csv(exp_dir / "metrics.csv")
    assert metrics["stage"].tolist() == ["head"] * 2 + ["full"] * 4
    assert {"valid/accuracy", "valid/f1_macro", "valid/loss"} <= set(metrics.columns)
    assert "valid/map" not in metrics.columns and "valid/top5_accuracy" not in metrics.columns  # 3 classes
    assert outcome.results["test"]["accuracy"] > 0.6  # chance is 1/3: the squares' corners are learnt
    assert not (exp_dir / "thresholds.json").exists()
    mf = load_model_file(exp_dir / "model.best.pth")
    assert mf.task == "single_label" and mf.classes == sorted(SINGLE_CLASSES)
    report = (exp_dir / "report.md").read_text()
    assert "## Confusion matrix (test)" in report and "threshold for F1" not in report
    confusion = pd.read_csv(exp_dir / "confusion.csv", index_col=0)
    assert confusion.to_numpy().sum() == 24 and list(confusion.columns) == sorted(SINGLE_CLASSES)
    assert confusion.to_numpy().trace() / 24 == pytest.approx(outcome.results["test"]["accuracy"])


def test_the_new_head_starts_at_the_class_frequencies(tmp_path):
    root = make_folders(tmp_path / "data", counts=(("train", 10), ("valid", 3), ("test", 3)))
    from mlic.train.prepare import prepare

    prepared = prepare(single_config(root))
    model = prepared.module.model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(torch.zeros(1, 3, 32, 32)), 1)[0]
    # 10 images over 3 classes: 4, 3, 3 (sorted class order: left, middle, right)
    assert probs.numpy() == pytest.approx(np.array([4, 3, 3]) / 10, abs=2e-2)


def test_test_flag_reproduces_the_reported_metrics(trained):
    outcome, config, _ = trained
    again = evaluate_split(config, "test")
    for key, value in outcome.results["test"].items():
        assert again.results["test"][key] == pytest.approx(value, abs=1e-6), key


def test_export_returns_probabilities_that_sum_to_one_and_match_eager(trained):
    outcome, _, root = trained
    written = export_experiment(outcome.exp_dir, formats=["torchscript"], images=root / "valid" / "left")
    mf = load_model_file(outcome.exp_dir / "model.best.pth")
    images = torch.randint(0, 255, (4, 32, 32, 3), dtype=torch.uint8)
    got = run_exported("torchscript", written["torchscript"], images)
    assert got.sum(1) == pytest.approx(np.ones(4), abs=1e-5)
    with torch.no_grad():
        x = (
            images.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mf.prep.mean).view(1, 3, 1, 1)
        ) / torch.tensor(mf.prep.std).view(1, 3, 1, 1)
        eager = torch.softmax(mf.model(x), 1).numpy()
    assert got == pytest.approx(eager, abs=1e-4)


def test_predict_writes_the_top_classes_with_their_probabilities(trained):
    outcome, _, root = trained
    mf = load_model_file(outcome.exp_dir / "model.best.pth")
    paths = sorted((root / "test").glob("*/*.png"))[:6] + [root / "missing.png"]
    df = predict_paths(mf, paths, np.full(3, 0.5), batch_size=4, device="cpu", top_k=2, show_progress=False)
    assert list(df.columns) == ["image", "predicted", "top1", "top1_prob", "top2", "top2_prob", "error"]
    ok = df[df["error"] == ""]
    assert len(ok) == 6 and df["error"].iloc[-1]
    assert (ok["predicted"] == ok["top1"]).all() and (ok["top1_prob"] >= ok["top2_prob"]).all()
    assert (ok["top1"] != ok["top2"]).all() and (ok["top1_prob"] + ok["top2_prob"] <= 1 + 1e-6).all()


# ------------------------------------------------------------------------------------------ mistakes


CONFIG = """
from mlic import Config, Data, Model, env_path
config = Config(experiment_name="s", task={task!r}, epochs=1,
                data=Data(root=env_path(), train="train", valid="valid", test=None, img_size=(32, 32)),
                model=Model(name="test_resnet", pretrained=False), trainer=dict(accelerator="cpu"))
"""


@pytest.mark.parametrize(
    "case, task, expected",
    [
        ("empty class folder", "single_label", r"class folder .*train/empty holds no images"),
        ("unknown class in valid", "single_label", r"class folder .*valid/other is not one of the train"),
        ("folders for multi-label", "multi_label", r"is a folder: a folder per class .* task='single_label'"),
    ],
)
def test_user_mistakes_are_one_sentence_and_nothing_is_trained(tmp_path, case, task, expected):
    root = make_folders(tmp_path / "data", counts=(("train", 6), ("valid", 3)))
    if case == "empty class folder":
        (root / "train" / "empty").mkdir()
    if case == "unknown class in valid":
        make_folders(tmp_path / "other", counts=(("valid", 1),))
        (tmp_path / "other" / "valid" / "left").rename(root / "valid" / "other")
    result = train_cli(tmp_path, CONFIG.format(task=task))
    stderr = assert_user_error(result)
    assert re.search(expected, stderr), stderr
    assert not (tmp_path / "experiments" / "s" / "metrics.csv").exists()


def test_a_monitor_of_the_other_task_is_one_sentence(tmp_path):
    (tmp_path / "c.py").write_text(
        "from mlic import Config, Data\n"
        "config = Config(experiment_name='x', task='single_label', monitor='valid/map', data=Data(root='.'))\n"
    )
    with pytest.raises(
        ConfigError, match=r"'monitor' must be one of valid/loss, valid/accuracy.*single_label"
    ):
        load_config(tmp_path / "c.py")


def test_compare_lists_a_single_label_experiment_by_accuracy(trained):
    from mlic.evaluate.compare import compare

    outcome, _, _ = trained
    table, _ = compare([outcome.exp_dir])
    assert table["test/accuracy"].iloc[0] == pytest.approx(outcome.results["test"]["accuracy"], abs=1e-4)
    assert "valid/map" not in table.columns
