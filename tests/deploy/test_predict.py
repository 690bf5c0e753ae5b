"""predict.py: probabilities and predicted genres for a folder or a CSV of images, failures as rows."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import (
    CLASSES,
    REPO,
    MakesAFolder,
    Settings,
    assert_user_error,
    make_dataset,
    tiny_config,
    write_bomb,
)

from mlic import Stage
from mlic.data.images import ImageTransform, read_rgb
from mlic.deploy.predict import list_inputs, predict_paths
from mlic.experiment.checkpoints import load_model_file, read_thresholds

COLUMNS = ["image", *CLASSES, "predicted", "error"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny experiment trained once (a single 1-epoch stage): (experiment folder, dataset)."""
    from mlic.train.stages import run

    base = tmp_path_factory.mktemp("predict")
    dataset = make_dataset(base / "data", n_train=16, n_valid=8, n_test=8)
    config = tiny_config(dataset, "predict", stages=[Stage("full", epochs=1, lr=3e-3)])
    config.output_dir = str(base / "experiments")
    return run(config).exp_dir, dataset


@pytest.fixture
def images(trained, tmp_path: Path) -> Path:
    """A folder of 5 dataset images (one with an upper-case extension), a corrupted .jpg and a text file."""
    _, dataset = trained
    folder = tmp_path / "new"
    folder.mkdir()
    for path in sorted((dataset / "Images").glob("*.jpg"))[:5]:
        shutil.copy(path, folder / path.name)
    (folder / "m0000.jpg").rename(folder / "m0000.JPG")
    (folder / "broken.jpg").write_bytes(b"these bytes are no JPEG" * 10)
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def experiment(trained, tmp_path: Path) -> Path:
    """A copy of the trained experiment folder that a test may change."""
    return Path(shutil.copytree(trained[0], tmp_path / "experiment"))


def _run(capsys: pytest.CaptureFixture, *argv: object) -> subprocess.CompletedProcess:
    """`predict.py`'s `main(argv)` in-process, as a CompletedProcess for `assert_user_error`."""
    sys.path.insert(0, str(REPO))
    try:
        import predict
    finally:
        sys.path.remove(str(REPO))
    code = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(argv), code, out, err)


def _by_hand(model_path: Path, paths: list[Path]) -> np.ndarray:
    """Probabilities computed directly: ImageTransform + sigmoid(model(x)), one image at a time."""
    model_file = load_model_file(model_path)
    prep = model_file.prep
    transform = ImageTransform(prep.img_size, prep.mean, prep.std, None, prep.interpolation)
    with torch.no_grad():
        return np.stack(
            [torch.sigmoid(model_file.model(transform(read_rgb(str(p)))[None]))[0].numpy() for p in paths]
        )


def test_a_corrupted_image_is_a_failure_row_and_the_others_are_predicted_exactly(trained, images):
    exp_dir, _ = trained
    names, paths = list_inputs(images)
    assert [p.name for p in paths] == [
        "broken.jpg",
        "m0000.JPG",
        "m0001.jpg",
        "m0002.jpg",
        "m0003.jpg",
        "m0004.jpg",
    ]
    model_file = load_model_file(exp_dir / "model.best.pth")
    thresholds, _ = read_thresholds(exp_dir, model_file.classes, model_file.threshold)
    df = predict_paths(model_file, paths, thresholds, batch_size=4, device="cpu", names=names)

    assert df.columns.tolist() == COLUMNS and df["image"].tolist() == [str(p) for p in paths]
    broken = df.iloc[0]
    assert "broken.jpg" in broken["error"] and "cannot be decoded" in broken["error"]
    assert broken[CLASSES].isna().all() and broken["predicted"] == ""
    ok = df.iloc[1:]
    assert (ok["error"] == "").all()
    np.testing.assert_allclose(
        ok[CLASSES].to_numpy(float), _by_hand(exp_dir / "model.best.pth", paths[1:]), atol=1e-6
    )


def test_predicted_follows_thresholds_json_else_the_model_files_threshold(
    experiment, images, tmp_path, capsys
):
    (experiment / "thresholds.json").write_text(json.dumps({"Action": 0.0, "Comedy": 1.01, "Drama": 0.5}))
    result = _run(capsys, experiment, images, "--out", tmp_path / "tuned.csv")
    assert result.returncode == 0, result.stderr
    assert "thresholds.json" in result.stdout
    df = pd.read_csv(tmp_path / "tuned.csv", keep_default_na=False).iloc[1:]  # row 0: broken.jpg
    drama = pd.to_numeric(df["Drama"]) >= 0.5
    expected = ["Action|Drama" if d else "Action" for d in drama]
    assert df["predicted"].tolist() == expected

    (experiment / "thresholds.json").unlink()
    saved = torch.load(experiment / "model.best.pth", weights_only=True)
    torch.save({**saved, "threshold": 0.0}, experiment / "model.best.pth")
    result = _run(capsys, experiment, images, "--out", tmp_path / "global.csv")
    assert result.returncode == 0, result.stderr
    assert "threshold 0 for every class" in result.stdout
    df = pd.read_csv(tmp_path / "global.csv", keep_default_na=False)
    assert df["predicted"].tolist() == [""] + ["|".join(CLASSES)] * 5


def test_csv_of_ids_with_images_dir_predicts_every_row(trained, tmp_path, capsys):
    exp_dir, dataset = trained
    out = tmp_path / "valid.csv"
    result = _run(capsys, exp_dir, dataset / "valid_df.csv", "--images-dir", dataset / "Images", "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"8 predicted, 0 failed: {out}" in result.stdout
    df = pd.read_csv(out, keep_default_na=False)
    assert df["image"].tolist() == pd.read_csv(dataset / "valid_df.csv")["Id"].tolist()
    assert (df["error"] == "").all() and pd.to_numeric(df["Drama"]).between(0, 1).all()


def test_csv_paths_are_relative_to_the_csv_and_a_missing_image_is_a_failure_row(trained, tmp_path, capsys):
    exp_dir, dataset = trained
    (tmp_path / "lists").mkdir()
    table = tmp_path / "lists" / "todo.csv"
    absolute = str(dataset / "Images" / "m0001.jpg")
    pd.DataFrame({"title": ["a", "b", "c"], "path": ["../img/m0000.jpg", absolute, "nowhere.jpg"]}).to_csv(
        table, index=False
    )
    (tmp_path / "img").mkdir()
    shutil.copy(dataset / "Images" / "m0000.jpg", tmp_path / "img")
    result = _run(capsys, exp_dir, table, "--out", "out.csv")
    assert result.returncode == 0, result.stderr
    assert "2 predicted, 1 failed" in result.stdout
    df = pd.read_csv("out.csv", keep_default_na=False)
    assert df["image"].tolist() == ["../img/m0000.jpg", absolute, "nowhere.jpg"]
    assert df["error"].tolist()[:2] == ["", ""] and "does not exist" in df["error"][2]
    assert df.loc[2, "Drama"] == ""


def test_cli_end_to_end(trained, images, tmp_path):
    exp_dir, _ = trained
    out = tmp_path / "predictions.csv"
    result = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), str(exp_dir), str(images), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"5 predicted, 1 failed: {out}"
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert df.columns.tolist() == COLUMNS and len(df) == 6
    assert all(len(v.split(".")[1]) == 6 for v in df.loc[1:, "Action"])  # 6 decimals


def test_existing_out_is_refused_without_force(trained, images, tmp_path, capsys):
    exp_dir, _ = trained
    out = tmp_path / "predictions.csv"
    out.write_text("keep me\n")
    stderr = assert_user_error(_run(capsys, exp_dir, images, "--out", out))
    assert str(out) in stderr and "--force" in stderr
    assert out.read_text() == "keep me\n"
    assert _run(capsys, exp_dir, images, "--out", out, "--force").returncode == 0
    assert pd.read_csv(out).columns.tolist() == COLUMNS


def test_every_image_failing_writes_the_file_and_exits_2(trained, tmp_path, capsys):
    exp_dir, _ = trained
    (tmp_path / "bad").mkdir()
    for name in ("a.png", "b.jpg"):
        (tmp_path / "bad" / name).write_bytes(b"\x00" * 50)
    stderr = assert_user_error(_run(capsys, exp_dir, tmp_path / "bad", "--out", "out.csv"))
    assert "none of the 2 images could be predicted" in stderr
    assert (pd.read_csv("out.csv", keep_default_na=False)["predicted"] == "").all()


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no experiment", "experiment folder"),
        ("no weights", "model file model.swa.pth is not in"),
        ("empty folder", "holds no images"),
        ("no column", "has no column 'Path'"),
        ("no input", "does not exist"),
    ],
)
def test_user_mistakes_are_one_line_errors(trained, tmp_path, capsys, case, expected):
    exp_dir, dataset = trained
    (tmp_path / "empty").mkdir()
    argv = {
        "no experiment": [tmp_path / "experiments" / "nope", dataset / "Images"],
        "no weights": [exp_dir, dataset / "Images", "--weights", "model.swa.pth"],
        "empty folder": [exp_dir, tmp_path / "empty"],
        "no column": [exp_dir, dataset / "valid_df.csv", "--column", "Path"],
        "no input": [exp_dir, tmp_path / "nothing"],
    }[case]
    stderr = assert_user_error(_run(capsys, *argv, "--out", "out.csv"))
    assert expected in stderr
    assert not Path("out.csv").exists()


@pytest.mark.parametrize("payload", [MakesAFolder, Settings], ids=["a call of os.makedirs", "a custom class"])
def test_a_model_file_holding_code_is_refused_as_code_and_the_code_does_not_run(
    experiment, images, tmp_path, capsys, payload
):
    model = experiment / "model.best.pth"
    saved = torch.load(model, weights_only=True)
    torch.save({**saved, "extra": payload(tmp_path / "ran")}, model)
    stderr = assert_user_error(_run(capsys, experiment, images, "--out", "out.csv"))
    assert stderr.startswith(
        f"error: model file {model} holds Python objects beyond tensors, that is code loading would run"
    )
    assert not (tmp_path / "ran").exists()
    assert not Path("out.csv").exists()


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("text", "cannot be read: it is not a torch file (it starts with text: 'not a model')"),
        ("truncated", "cannot be read: it is truncated, the file ends before its data does"),
    ],
)
def test_a_damaged_model_file_says_in_words_what_is_wrong(experiment, images, capsys, damage, expected):
    model = experiment / "model.best.pth"
    if damage == "text":
        model.write_text("not a model\n")
    else:
        model.write_bytes(model.read_bytes()[:-10])
    stderr = assert_user_error(_run(capsys, experiment, images, "--out", "out.csv"))
    assert stderr.startswith(f"error: model file {model} {expected}")


def test_a_decompression_bomb_is_a_failure_row_that_says_so(trained, tmp_path: Path):
    exp_dir, _ = trained
    bomb = write_bomb(tmp_path / "poster.jpg")
    model_file = load_model_file(exp_dir / "model.best.pth")
    thresholds, _ = read_thresholds(exp_dir, model_file.classes, model_file.threshold)
    row = predict_paths(model_file, [bomb], thresholds, batch_size=4, device="cpu").iloc[0]
    assert "is 20000×20000 = 400,000,000 pixels, over data.max_image_pixels" in row["error"]
    assert row["error"].endswith("shrink it, or leave it out")
