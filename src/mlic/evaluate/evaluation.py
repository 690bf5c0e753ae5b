"""Evaluating weights: the config's loss checked and set up, metrics of a module on each split, the one
way to compute probabilities (`probabilities`), per-class thresholds, and opening a trained experiment
(`open_experiment`, for `train.py --validate/--test`, swa.py, export and predict)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mlic.config.schema import Config
from mlic.data.loaders import make_loader
from mlic.data.tables import LabelTable, read_splits
from mlic.engine.module import ClassifierModule
from mlic.engine.runtime import eval_trainer, expected_warnings_silenced
from mlic.evaluate.calibrate import apply_calibration
from mlic.experiment.calibration import read_calibration
from mlic.experiment.checkpoints import (
    ModelFile,
    load_model_file,
    read_thresholds,
    resolve_model_file,
    thresholds_file,
    write_thresholds,
)
from mlic.experiment.files import MODEL_BEST
from mlic.metrics.calibration import Calibration
from mlic.metrics.classification import f1_at, tune_thresholds
from mlic.tasks import Task, get_task
from mlic.utils.errors import ConfigError, DataError

log = logging.getLogger("mlic")

Results = dict[str, dict[str, float]]  # split -> metric -> value


# --------------------------------------------------------------------------------------------- the loss


def setup_loss(loss: Any, train: LabelTable, classes: list[str], task: str | Task = "multi_label") -> None:
    """Give the loss the train labels when it wants them, then try it on one batch of the train targets,
    so a loss that does not fit these classes stops before anything is written or trained."""
    if hasattr(loss, "setup"):  # e.g. BCEWithLogitsLoss(pos_weight="auto") reads the train labels
        loss.setup(train.targets)
        weight = getattr(loss, "pos_weight", None)
        if getattr(loss, "auto", False) and weight is not None:
            pairs = ", ".join(f"{c} {float(w):.2f}" for c, w in zip(classes, weight))
            log.info("pos_weight from the train labels (negatives/positives): %s", pairs)
    targets = get_task(task).loss_probe(train.targets[:4])  # a writable copy, shaped as batches are
    try:
        value = loss(torch.zeros_like(targets), targets)
    except Exception as e:  # noqa: BLE001 - any failure of user code is reported with the field
        raise ConfigError(
            f"field 'loss': {type(loss).__name__} fails on a batch of {len(classes)} classes: "
            f"{type(e).__name__}: {e}"
        ) from None
    if not (isinstance(value, torch.Tensor) and value.numel() == 1):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ConfigError(
            f"field 'loss': {type(loss).__name__} must return one number per batch, got {shape}; "
            f"use reduction='mean' or 'sum'"
        )


def constant_loss(loss: Any, targets: np.ndarray, logits: np.ndarray) -> float:
    """The config's loss over the train labels when every image gets the same `logits`."""
    y = torch.from_numpy(np.array(targets, dtype=np.float32))
    with torch.no_grad():
        return float(loss(torch.as_tensor(logits, dtype=torch.float32).expand_as(y), y))


# ------------------------------------------------------------------------------------------ inference


def probabilities(model: nn.Module, images: torch.Tensor, task: str | Task = "multi_label") -> np.ndarray:
    """Per-class probabilities of one batch (the task's activation of the logits: a sigmoid, or a
    softmax for a single-label task), without gradients, on the CPU. The caller puts `model` in eval
    mode and `images` on its device."""
    with torch.no_grad():
        return get_task(task).activate(model(images).float()).cpu().numpy()


def eval_module(model: nn.Module, config: Config) -> ClassifierModule:
    """`model` wrapped for evaluation with the config's loss, threshold and test-time augmentation."""
    module = ClassifierModule.from_config(model, config)
    module.tta = config.tta
    return module


@dataclass
class Evaluated:
    """What `evaluate` measured: each split's metrics, and the probabilities and targets they came from
    (for thresholds and the per-class tables)."""

    results: Results
    outputs: dict[str, tuple[np.ndarray, np.ndarray]]


def evaluate(
    module: ClassifierModule, config: Config, loaders: dict[str, Any], splits: list[str]
) -> Evaluated:
    """Metrics of the module's current weights on each of `splits` (the loaders it has), from each
    split's evaluator (`module.evaluators`, `mlic.engine.evaluator`)."""
    trainer = eval_trainer(config)
    out = Evaluated({}, {})
    for split in splits:
        if split not in loaders:
            continue
        with expected_warnings_silenced():
            if split == "test":
                trainer.test(module, loaders[split], verbose=False)
            else:
                trainer.validate(module, loaders[split], verbose=False)
        result = module.evaluators[split].result
        if result is not None:
            out.results[split] = dict(result.metrics)
            out.outputs[split] = (result.probs, result.targets)
    return out


# ----------------------------------------------------------------------------------------- thresholds


def add_tuned(results: Results, outputs: dict[str, Any], thresholds: np.ndarray) -> None:
    """Add F1 micro/macro at per-class `thresholds` (`*_tuned`) to each split of `results`."""
    for split, (probs, targets) in outputs.items():
        if split in results:
            tuned = f1_at(probs, targets, thresholds)
            results[split].update({f"{k}_tuned": v for k, v in tuned.items()})


def apply_thresholds(
    exp_dir: Path, config: Config, classes: list[str], outputs: dict[str, Any], results: Results
) -> np.ndarray | None:
    """Tune per-class thresholds on valid, save `thresholds.json`, add tuned F1s to `results` (for a
    task that tunes them: multi-label)."""
    if "valid" not in outputs or not get_task(config.task).tunes_thresholds:
        return None
    probs, targets = outputs["valid"]
    thresholds = tune_thresholds(probs, targets, config.threshold)
    write_thresholds(exp_dir, classes, thresholds)
    add_tuned(results, outputs, thresholds)
    return thresholds


def per_class_rows(
    config: Config,
    classes: list[str],
    tables: dict[str, LabelTable],
    outputs: dict[str, Any],
    thresholds: np.ndarray | None,
) -> list[dict[str, Any]]:
    """One row per class of the report's per-class table, as the config's task writes it."""
    supports = {split: table.targets.sum(0) for split, table in tables.items()}
    return get_task(config.task).per_class_rows(classes, supports, outputs, config.threshold, thresholds)


# ------------------------------------------------------------------------------ a trained experiment


@dataclass
class TrainedModel:
    """A model file of an experiment, rebuilt; with a config, the config's label tables too."""

    exp_dir: Path
    path: Path
    model_file: ModelFile
    tables: dict[str, LabelTable] | None = None

    @property
    def thresholds_path(self) -> Path | None:
        """The experiment's `thresholds.json`, None when it has none."""
        path = thresholds_file(self.exp_dir)
        return path if path.is_file() else None

    def calibration(self) -> Calibration | None:
        """The calibration fitted for this model file (`calibration.json`), None without one."""
        return read_calibration(self.exp_dir, self.model_file.classes, self.path.name)

    def thresholds(self) -> tuple[np.ndarray, str]:
        """Per-class thresholds (`thresholds.json`, else the model file's one threshold for every class)
        and a sentence saying which."""
        return read_thresholds(self.exp_dir, self.model_file.classes, self.model_file.threshold)


def open_experiment(
    exp_dir: Path, weights: str | Path = MODEL_BEST, config: Config | None = None
) -> TrainedModel:
    """The model file `weights` of an experiment folder (or a path), rebuilt: what `--validate/--test`,
    swa.py, export.py and predict.py start from. With `config`, its label tables are read and checked to
    hold the model's classes, and its loss is set up as in training (`pos_weight="auto"` reads the train
    labels)."""
    exp_dir = Path(exp_dir)
    path = resolve_model_file(exp_dir, weights)
    mf = load_model_file(path)
    if config is None:
        return TrainedModel(exp_dir, path, mf)
    tables = read_splits(config.data, config.seed, config.task)
    if tables["train"].classes != mf.classes:
        raise DataError(
            f"{path} was trained on the classes {', '.join(mf.classes)}, but {config.data.train} has "
            f"{', '.join(tables['train'].classes)}; use the data it was trained on, or weights trained on "
            f"these classes"
        )
    setup_loss(config.loss, tables["train"], mf.classes, config.task)
    return TrainedModel(exp_dir, path, mf, tables)


@dataclass
class Evaluation:
    """What `evaluate_split` measured: metrics of one model file on one split."""

    path: Path
    split: str
    num_images: int
    results: Results
    thresholds_path: Path | None  # where the `*_tuned` F1s' thresholds came from


def evaluate_split(config: Config, split: str, weights: str | Path | None = None) -> Evaluation:
    """Evaluate a model file of the experiment (default `model.best.pth`) on `split` (`--validate`, `--test`)."""
    trained = open_experiment(config.experiment_dir, weights or MODEL_BEST, config)
    mf, tables = trained.model_file, trained.tables
    if mf.model_name != config.model.name:  # it runs as saved; the numbers are not the config's model's
        log.warning(
            "%s was trained as %r, not as the config's %r: evaluating it as %r",
            trained.path,
            mf.model_name,
            config.model.name,
            mf.model_name,
        )
    if split not in tables:
        raise ConfigError(f"the config has no {split} split (data.{split} is None)")
    loaders = {split: make_loader(tables[split], mf.prep.transform(), config.data, train=False)}
    module = eval_module(mf.model, config)
    evaluated = evaluate(module, config, loaders, [split])
    results = evaluated.results
    calibration = trained.calibration()
    if calibration is not None:  # the probabilities the experiment's thresholds were tuned on
        apply_calibration(calibration, config, evaluated.outputs, results)
    if trained.thresholds_path is not None:
        add_tuned(results, evaluated.outputs, trained.thresholds()[0])
    return Evaluation(trained.path, split, len(tables[split]), results, trained.thresholds_path)
