"""Config(calibration=...): fitted on valid after training, saved as calibration.json, reported (ECE
before and after, a reliability diagram), and used by --test, predict.py and every export format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_dataset, make_folders, single_config, tiny_config

from mlic import ConfigError, Stage
from mlic.data.images import read_rgb, resize
from mlic.deploy.export import export_experiment, run_exported
from mlic.deploy.predict import predict_paths
from mlic.evaluate.evaluation import evaluate_split, open_experiment
from mlic.train.stages import run


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> tuple[Path, object]:
    """A tiny experiment trained with temperature scaling: (folder, config)."""
    base = tmp_path_factory.mktemp("calibrated")
    dataset = make_dataset(base / "data", n_train=32, n_valid=24, n_test=16)
    config = tiny_config(dataset, "calibrated", stages=[Stage("full", epochs=2, lr=3e-3)])
    config.output_dir = str(base / "experiments")
    config.calibration = "temperature"
    run(config)
    return config.experiment_dir, config


def test_training_fits_saves_and_reports_the_calibration(calibrated):
    exp_dir, config = calibrated
    saved = json.loads((exp_dir / "calibration.json").read_text())
    assert saved["method"] == "temperature" and saved["model"] == "model.best.pth"
    assert list(saved["classes"]) == ["Action", "Comedy", "Drama"]
    assert all(entry["scale"] > 0 and entry["shift"] == 0 for entry in saved["classes"].values())
    report = (exp_dir / "report.md").read_text()
    assert "## Calibration" in report and "ECE before" in report and "reliability.png" in report
    assert (exp_dir / "reliability.png").stat().st_size > 1000
    page = (exp_dir / "report.html").read_text()
    assert 'id="calibration"' in page and '<img id="reliability"' in page and "data:image/png;base64," in page


def test_test_split_metrics_use_the_calibration_and_map_does_not_change(calibrated, tmp_path):
    exp_dir, config = calibrated
    with_calibration = evaluate_split(config, "test").results["test"]
    copy = Path(shutil.copytree(exp_dir, tmp_path / "raw"))
    (copy / "calibration.json").unlink()
    raw_config = tiny_config(config.data.root, "raw", output_dir=str(tmp_path))
    raw_config.stages = config.stages
    without = evaluate_split(raw_config, "test").results["test"]
    # a temperature per class keeps each class's order: AP and AUC are the same
    assert with_calibration["map"] == pytest.approx(without["map"], abs=1e-9)
    assert with_calibration["auc"] == pytest.approx(without["auc"], abs=1e-9)
    report = (exp_dir / "report.md").read_text()
    assert f"{with_calibration['map']:.4f}" in report  # --test says what the report says


def test_predict_and_every_export_give_the_calibrated_probabilities(calibrated):
    exp_dir, config = calibrated
    trained = open_experiment(exp_dir)
    calibration = trained.calibration()
    assert calibration is not None
    paths = sorted(Path(config.data.root, "Images").glob("*.jpg"))[:6]
    thresholds, _ = trained.thresholds()
    df = predict_paths(trained.model_file, paths, thresholds, device="cpu", calibration=calibration)
    predicted = df[trained.model_file.classes].to_numpy()
    raw = predict_paths(trained.model_file, paths, thresholds, device="cpu")[trained.model_file.classes]
    assert not np.allclose(predicted, raw.to_numpy(), atol=1e-4)  # the calibration changed them

    export_experiment(exp_dir, formats=("torchscript", "export"), images=Path(config.data.root, "Images"))
    prep = trained.model_file.prep
    images = torch.from_numpy(
        np.stack([resize(read_rgb(str(p)), prep.img_size, prep.interpolation) for p in paths])
    )
    for fmt, name in (("torchscript", "model.ts"), ("export", "model.pt2")):
        np.testing.assert_allclose(run_exported(fmt, exp_dir / name, images), predicted, atol=1e-5)
    assert "temperature scaling" in json.loads((exp_dir / "export.json").read_text())["calibration"]


def test_a_single_label_model_gets_one_temperature(tmp_path: Path):
    config = single_config(make_folders(tmp_path / "folders"), stages=[Stage("full", epochs=1)])
    config.calibration = "temperature"
    run(config)
    scales = {
        e["scale"]
        for e in json.loads((config.experiment_dir / "calibration.json").read_text())["classes"].values()
    }
    assert len(scales) == 1


def test_calibration_on_a_segmentation_task_is_one_sentence(tmp_path: Path):
    from conftest import make_masks, seg_config

    from mlic.config.validation import validate

    config = seg_config(make_masks(tmp_path / "masks"))
    config.calibration = "temperature"
    with pytest.raises(ConfigError, match="field 'calibration' calibrates per-image class probabilities"):
        validate(config)
