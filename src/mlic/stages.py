"""Run the stages of a config: data → model → (freeze → fit) per stage → best model → report."""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from mlic import io
from mlic.config import Config, Stage, config_copy_text
from mlic.data import ImageTransform, LabelTable, make_loader, read_splits
from mlic.models import Preprocessing, create_model, head_parameter_names, load_checkpoint, preprocessing
from mlic.module import ClassifierModule, current_lrs
from mlic.report import write_report

log = logging.getLogger("mlic")

# Expected with a frozen backbone, whose BatchNorm layers are kept in eval mode on purpose.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def auto_precision() -> str:
    """Mixed precision on a GPU (bf16 where supported), full precision on a CPU."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def trainer_kwargs(config: Config) -> dict[str, Any]:
    """Lightning Trainer arguments: mlic's defaults, then the config's `trainer` dict on top."""
    kwargs: dict[str, Any] = {
        "accelerator": "auto",
        "devices": 1,
        "precision": auto_precision(),
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 10,
    }
    kwargs.update(config.trainer)
    if kwargs.get("precision") == "auto":
        kwargs["precision"] = auto_precision()
    return kwargs


class AtomicModelCheckpoint(ModelCheckpoint):
    """Lightning's top-k checkpointing, with each file written to a temporary name and renamed."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = os.path.join(os.path.dirname(filepath), f".{os.path.basename(filepath)}.tmp")
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero and os.path.exists(tmp):
            os.replace(tmp, filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


class ExperimentRecorder(Callback):
    """Writes `metrics.csv` every epoch and `model.best.pth` whenever the monitored metric improves."""

    def __init__(self, exp_dir: Path, config: Config, classes: list[str], prep: Preprocessing) -> None:
        self.exp_dir = exp_dir
        self.config = config
        self.classes = classes
        self.prep = prep
        self.monitor = config.monitor
        self.mode = config.resolved_monitor_mode()
        self.rows: list[dict[str, Any]] = []
        self.best_value: float | None = None
        self.best_row: dict[str, Any] | None = None
        self.stage: Stage | None = None
        self._epoch_start = time.time()

    def model_file(self, module: ClassifierModule, metrics: dict[str, Any]) -> dict[str, Any]:
        """The plain-dict model file: loadable with `torch.load(weights_only=True)`."""
        return {
            "state_dict": {k: v.detach().cpu().clone() for k, v in module.model.state_dict().items()},
            "model_name": self.config.model.name,
            "classes": list(self.classes),
            "img_size": list(self.prep.img_size),
            "normalization": {
                "mean": list(self.prep.mean),
                "std": list(self.prep.std),
                "interpolation": self.prep.interpolation,
            },
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
        }

    def _improved(self, value: float) -> bool:
        if value is None or math.isnan(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._epoch_start = time.time()

    def on_train_epoch_end(self, trainer: L.Trainer, module: ClassifierModule) -> None:
        summary = dict(module.epoch_summary)
        module.epoch_summary.clear()
        row: dict[str, Any] = {
            "stage": self.stage.name if self.stage else "",
            "epoch": trainer.current_epoch + 1,
            "step": trainer.global_step,
        }
        if trainer.optimizers:
            row.update(current_lrs(trainer.optimizers[0]))
        row.update(summary)
        row["time_s"] = round(time.time() - self._epoch_start, 2)
        self.rows.append(row)
        if not trainer.is_global_zero:
            return
        io.write_with(self.exp_dir / "metrics.csv", lambda p: pd.DataFrame(self.rows).to_csv(p, index=False))
        value = summary.get(self.monitor)
        if self._improved(value):
            self.best_value = value
            self.best_row = row
            io.save_torch(self.exp_dir / "model.best.pth", self.model_file(module, row))

    def save_last(self, module: ClassifierModule) -> None:
        last = self.rows[-1] if self.rows else {}
        io.save_torch(self.exp_dir / "model.last.pth", self.model_file(module, last))


def _set_aside_previous_run(exp_dir: Path) -> None:
    """A rerun never overwrites an earlier run: its folder is renamed with a timestamp."""
    if exp_dir.is_dir() and any(exp_dir.iterdir()):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(exp_dir.stat().st_mtime))
        target = exp_dir.with_name(f"{exp_dir.name}.{stamp}")
        n = 1
        while target.exists():
            target = exp_dir.with_name(f"{exp_dir.name}.{stamp}-{n}")
            n += 1
        exp_dir.rename(target)
        log.warning("an earlier run of %s was moved to %s", exp_dir.name, target)


def _device_name(kwargs: dict[str, Any]) -> str:
    if kwargs.get("accelerator") in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return str(kwargs.get("accelerator")) if kwargs.get("accelerator") != "auto" else "cpu"


def _make_trainer(config: Config, stage: Stage, exp_dir: Path, recorder: ExperimentRecorder) -> L.Trainer:
    checkpoint = AtomicModelCheckpoint(
        dirpath=exp_dir / "checkpoints",
        filename=f"{stage.name}-epoch{{epoch:02d}}",
        monitor=config.monitor,
        mode=config.resolved_monitor_mode(),
        save_top_k=config.save_top_k,
        auto_insert_metric_name=False,
    )
    callbacks = [recorder, checkpoint, LearningRateMonitor(logging_interval="epoch"), *config.callbacks]
    logger = CSVLogger(save_dir=str(exp_dir), name="logs", version=stage.name)
    return L.Trainer(
        max_epochs=stage.epochs,
        callbacks=callbacks,
        logger=logger,
        default_root_dir=str(exp_dir),
        **trainer_kwargs(config),
    )


def _eval_trainer(config: Config) -> L.Trainer:
    kwargs = trainer_kwargs(config)
    kwargs.update(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    return L.Trainer(**kwargs)


def evaluate(
    module: ClassifierModule, config: Config, loaders: dict[str, Any], splits: list[str]
) -> dict[str, dict[str, float]]:
    """Metrics of the module's current weights on each of `splits`."""
    trainer = _eval_trainer(config)
    results: dict[str, dict[str, float]] = {}
    for split in splits:
        if split not in loaders:
            continue
        module.epoch_summary.clear()
        if split == "test":
            trainer.test(module, loaders[split], verbose=False)
        else:
            trainer.validate(module, loaders[split], verbose=False)
        results[split] = {
            k.split("/", 1)[1]: v for k, v in module.epoch_summary.items() if k.startswith(split)
        }
    module.epoch_summary.clear()
    return results


def build_loaders(
    config: Config, tables: dict[str, LabelTable], prep: Preprocessing
) -> dict[str, torch.utils.data.DataLoader]:
    """Train loader (augmented, shuffled) and plain loaders for valid/test."""
    d = config.data
    plain = ImageTransform(prep.img_size, prep.mean, prep.std, None, prep.interpolation)
    train_tf = ImageTransform(prep.img_size, prep.mean, prep.std, d.augmentations, prep.interpolation)
    loaders = {"train": make_loader(tables["train"], train_tf, d, train=True, seed=config.seed)}
    for split in ("valid", "test"):
        if split in tables:
            loaders[split] = make_loader(tables[split], plain, d, train=False)
    return loaders


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A small fixed-width table of metrics, one row per split."""
    columns = ["loss", "map", "auc", "f1_micro", "f1_macro"]
    lines = [f"{'split':<8}" + "".join(f"{c:>10}" for c in columns)]
    for split, values in results.items():
        lines.append(f"{split:<8}" + "".join(f"{values.get(c, float('nan')):>10.4f}" for c in columns))
    return "\n".join(lines)


def run(config: Config) -> Path:
    """Train every stage of `config` and write the experiment folder; return its path."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    tables = read_splits(config.data)
    classes = tables["train"].classes
    model = create_model(config.model, len(classes))
    if config.model.checkpoint:
        load_checkpoint(model, Path(config.model.checkpoint), config.model.name, classes)
    prep = preprocessing(model, config.data.img_size)
    head_parameter_names(model, prep.img_size)
    exp_dir = config.experiment_dir
    _set_aside_previous_run(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    io.write_text(exp_dir / "config.py", config_copy_text(config))
    io.write_json(exp_dir / "classes.json", classes)

    loaders = build_loaders(config, tables, prep)
    module = ClassifierModule(
        model,
        config.loss,
        config.optimizer,
        config.scheduler,
        threshold=config.threshold,
        freeze_bn=config.model.freeze_bn,
    )
    recorder = ExperimentRecorder(exp_dir, config, classes, prep)
    kwargs = trainer_kwargs(config)
    log.info("device: %s, precision %s", _device_name(kwargs), kwargs["precision"])
    started = time.time()
    for stage in config.resolved_stages():
        log.info(
            "stage %s: %d epoch(s), backbone %s",
            stage.name,
            stage.epochs,
            "frozen" if stage.freeze_backbone else "trainable",
        )
        module.set_stage(stage)
        recorder.stage = stage
        trainer = _make_trainer(config, stage, exp_dir, recorder)
        trainer.fit(module, loaders["train"], loaders["valid"])
        recorder.save_last(module)
        if trainer.interrupted:
            log.warning("training interrupted in stage %s; what was written is kept", stage.name)
            break
    train_time = time.time() - started

    best_path = exp_dir / "model.best.pth"
    if not best_path.exists():  # no epoch had a finite monitored value
        log.warning("%s was never finite; reporting the last weights instead of the best", config.monitor)
        best_path = exp_dir / "model.last.pth"
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    module.model.load_state_dict(best["state_dict"])
    results = evaluate(module, config, loaders, ["valid", "test"])
    write_report(exp_dir, config, classes, recorder.rows, recorder.best_row, results, train_time)
    print(
        f"\n{config.experiment_name}: best model ({config.monitor}) from stage "
        f"{best['metrics'].get('stage')}, epoch {best['metrics'].get('epoch')}"
    )
    print(format_table(results))
    print(f"\nexperiment folder: {exp_dir}")
    return exp_dir
