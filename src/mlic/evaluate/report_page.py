"""report.html from what a run evaluated (`write_page`, at the end of `train.py`), or for any finished
experiment from its folder (`refresh`; `python -m mlic.report experiments/<name>`, which evaluates its
best model again on test, else valid)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlic.config.loading import load_config
from mlic.config.schema import Config
from mlic.data.images import Preprocessing, read_rgb, resize_nearest
from mlic.data.loaders import make_loader
from mlic.data.tables import LabelTable
from mlic.evaluate.calibrate import apply_calibration
from mlic.evaluate.errors import page_errors
from mlic.evaluate.evaluation import eval_module, evaluate, open_experiment, per_class_rows
from mlic.evaluate.html_report import PER_LIST, thumbnail, write_html_report
from mlic.experiment.files import CONFIG_COPY
from mlic.tasks import Task, get_task
from mlic.utils.cli import run_cli
from mlic.utils.errors import ConfigError


def write_page(
    exp_dir: Path,
    config: Config,
    tables: dict[str, LabelTable],
    classes: list[str],
    outputs: dict[str, tuple[np.ndarray, np.ndarray]],
    thresholds: np.ndarray | None,
    notes: Sequence[str] = (),
    environment: dict[str, str] | None = None,
    model: tuple[nn.Module, Preprocessing] | None = None,
) -> Path:
    """report.html for the evaluated `outputs` (split -> probabilities, targets) of the run's best model
    (`model`: it and its preprocessing, to draw a segmentation model's predicted masks)."""
    per_class = thresholds if thresholds is not None else np.full(len(classes), config.threshold)
    rows = per_class_rows(config, classes, tables, outputs, thresholds)
    task = get_task(config.task)
    predict = mask_predictor(*model, task) if model is not None and task.pixelwise else None
    errors = page_errors(config.task, tables, classes, outputs, per_class, thumbnail, PER_LIST, predict)
    return write_html_report(exp_dir, config.task, classes, rows, errors, config.monitor, notes, environment)


def mask_predictor(model: nn.Module, prep: Preprocessing, task: Task) -> Callable[[str], np.ndarray]:
    """path -> the model's predicted foreground (any class but the first; any class for a mask per class)
    at the image's size."""
    transform = prep.transform()

    def foreground(path: str) -> np.ndarray:
        image = read_rgb(path)
        device = next(model.parameters()).device
        with torch.no_grad():
            probs = task.activate(model.eval()(transform(image)[None].to(device)))[0].float().cpu().numpy()
        mask = (probs >= 0.5).any(0) if getattr(task, "multilabel", False) else probs.argmax(0) > 0
        return resize_nearest(mask.astype(np.uint8), image.shape[:2]) > 0

    return foreground


def refresh(exp_dir: Path, config: Config | None = None) -> Path:
    """Evaluate the experiment's best model on test (else valid) and write its report.html."""
    exp_dir = Path(exp_dir)
    if config is None:
        if not (exp_dir / CONFIG_COPY).is_file():
            raise ConfigError(f"{exp_dir} has no {CONFIG_COPY}: is it an experiment folder?")
        config = load_config(exp_dir / CONFIG_COPY)
    trained = open_experiment(exp_dir, config=config)
    split = "test" if "test" in trained.tables else "valid"
    mf = trained.model_file
    loaders = {split: make_loader(trained.tables[split], mf.prep.transform(), config.data, train=False)}
    outputs = evaluate(eval_module(mf.model, config), config, loaders, [split]).outputs
    calibration = trained.calibration()
    if calibration is not None:  # the probabilities the thresholds were tuned on
        apply_calibration(calibration, config, outputs, {})
    thresholds = trained.thresholds()[0] if trained.thresholds_path is not None else None
    return write_page(
        exp_dir, config, trained.tables, mf.classes, outputs, thresholds, model=(mf.model, mf.prep)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlic.report", description="Write report.html of finished experiments."
    )
    parser.add_argument("experiments", nargs="+", type=Path, help="experiment folders, e.g. experiments/demo")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    def _run() -> int:
        for exp_dir in args.experiments:
            started = time.time()
            path = refresh(exp_dir)
            size = path.stat().st_size / 1e6
            print(f"wrote {path} ({size:.2f} MB in {time.time() - started:.1f} s)")
        return 0

    return run_cli(_run, args.debug)
