"""mlic's Lightning callbacks and plugin: the experiment recorder (metrics.csv, model.best.pth), the EMA
of the weights (model.ema.pth), and atomic checkpoint writes."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mlic.config.schema import Config, Stage
from mlic.data.images import Preprocessing
from mlic.data.loaders import seed_process
from mlic.engine.module import ClassifierModule
from mlic.engine.optim import current_lrs
from mlic.experiment.checkpoints import model_file, model_file_metrics, write_metrics
from mlic.experiment.files import METRICS, MODEL_BEST, MODEL_EMA, MODEL_LAST
from mlic.utils import io
from mlic.utils.errors import ConfigError

log = logging.getLogger("mlic")


# a stage whose first epoch ends with a valid loss this many times the stage before's has gone wrong
JUMP_FACTOR = 3.0


def stage_jump(
    rows: list[dict[str, Any]], lr: float | None = None, factor: float = JUMP_FACTOR
) -> str | None:
    """A sentence when the last row is a stage's first epoch and its valid loss is far above the last
    valid loss of the stage before it (an LR, the stage's `lr`, that wrecks what that stage learned);
    None otherwise."""
    if len(rows) < 2 or rows[-1].get("stage") == rows[-2].get("stage"):
        return None
    now, before = rows[-1].get("valid/loss"), rows[-2].get("valid/loss")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (now, before)):
        return None
    if now <= factor * before:
        return None
    stage, previous = rows[-1]["stage"], rows[-2]["stage"]
    at = f" at lr {lr:.2e}" if isinstance(lr, (int, float)) else ""
    return (
        f"stage {stage}'s first epoch{at} ended with valid loss {now:.4f}, {now / before:.1f}x stage "
        f"{previous}'s last ({before:.4f}): its LR undoes what stage {previous} learned; try a lower "
        f"lr for stage {stage} (a tenth of it), a smaller backbone_lr_scale, or lr=LRFinder(end_lr=...) "
        f"below the divergence. model.best.pth keeps the best epoch of any stage"
    )


class StageJumpWatch(Callback):
    """Says so (log and report) when a stage's first epoch ends far above the stage before's valid loss."""

    def __init__(self, recorder: ExperimentRecorder, notes: list[str]) -> None:
        self.recorder = recorder
        self.notes = notes

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        stage = self.recorder.stage
        lr = stage.lr if stage is not None and isinstance(stage.lr, (int, float)) else None
        note = stage_jump(self.recorder.rows, lr)
        if note is not None and trainer.is_global_zero:
            log.warning(note)
            self.notes.append(note)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, with each file written to a temporary name and renamed into place,
    so a run killed while saving never leaves a half-written `.ckpt` (Lightning's public extension point
    for how checkpoints are written: `Trainer(plugins=[...])`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with io.atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


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
        self._valid: dict[str, float] = {}  # the epoch's validation metrics, as logged

    def model_file(self, model: torch.nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
        return model_file(model, self.config, self.classes, self.prep, metrics)

    def _improved(self, value: float) -> bool:
        if value is None or math.isnan(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._epoch_start = time.time()
        self._valid = {}

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._valid = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("valid/")}

    def on_train_epoch_end(self, trainer: L.Trainer, module: ClassifierModule) -> None:
        # the epoch's values from Lightning's logged metrics: valid's as its validation ended (none when
        # it did not run this epoch), the train loss's mean and the augmentation schedule's p
        logged = trainer.callback_metrics
        summary = {k: float(logged[k]) for k in ("train/loss", "aug_p") if k in logged}
        summary.update(self._valid)
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
        write_metrics(self.exp_dir / METRICS, self.rows)
        self.forward_row(row, len(self.rows))
        value = summary.get(self.monitor)
        if self._improved(value):
            self.best_value = value
            self.best_row = row
            io.save_torch(self.exp_dir / MODEL_BEST, self.model_file(module.model, row))

    def forward_row(self, row: dict[str, Any], index: int) -> None:
        """Give the config's loggers the row's numbers (stage, epoch and step aside) at step `index`, the
        epoch's number across stages, so every logger's curve has one point per row of metrics.csv."""
        if not self.config.loggers:
            return
        metrics = {
            k: float(v)
            for k, v in row.items()
            if k not in ("stage", "epoch", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        for logger in self.config.loggers:
            logger.log_metrics(metrics, step=index)
            logger.save()

    def finalize_loggers(self, status: str = "success") -> None:
        for logger in self.config.loggers:
            logger.finalize(status)

    def restore(self, rows: list[dict[str, Any]]) -> None:
        """Continue after the rows of an interrupted run: its best model stays the one to beat."""
        self.rows = list(rows)
        for row in rows:
            value = row.get(self.monitor)
            if isinstance(value, (int, float)) and self._improved(value):
                self.best_value, self.best_row = value, row
        best = self.exp_dir / MODEL_BEST
        if best.is_file():  # it may come from an epoch that runs again
            saved = model_file_metrics(best)
            value = saved.get(self.monitor)
            if isinstance(value, (int, float)) and self._improved(value):
                self.best_value, self.best_row = value, saved

    def save_last(self, module: ClassifierModule) -> None:
        last = self.rows[-1] if self.rows else {}
        io.save_torch(self.exp_dir / MODEL_LAST, self.model_file(module.model, last))


class EMARecorder(Callback):
    """An exponential moving average of the weights during one stage, written as `model.ema.pth`.

    Uses `torch.optim.swa_utils.AveragedModel` with `get_ema_multi_avg_fn`; BatchNorm buffers are
    averaged too (`use_buffers=True`), so the EMA model needs no BatchNorm re-estimation.
    """

    def __init__(self, recorder: ExperimentRecorder, decay: float) -> None:
        self.recorder = recorder
        self.decay = decay
        self.ema: AveragedModel | None = None
        self._step = -1
        self._restored: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        # saved in every checkpoint, so that --resume continues the average instead of restarting it
        return {"ema": self.ema.state_dict()} if self.ema is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored = state.get("ema")

    def on_train_start(self, trainer: L.Trainer, module: ClassifierModule) -> None:
        self.ema = AveragedModel(
            module.model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True
        )
        if self._restored is not None:
            self.ema.load_state_dict(self._restored)
            self._restored = None

    def on_train_batch_end(self, trainer: L.Trainer, module: ClassifierModule, *args: Any) -> None:
        # once per optimizer step (with gradient accumulation, not every batch is one)
        if self.ema is None or trainer.global_step == self._step:
            return
        self._step = trainer.global_step
        self.ema.update_parameters(module.model)

    def on_train_epoch_end(self, trainer: L.Trainer, module: ClassifierModule) -> None:
        if self.ema is None or not trainer.is_global_zero:
            return
        row = dict(self.recorder.rows[-1]) if self.recorder.rows else {}
        row = {k: v for k, v in row.items() if k in ("stage", "epoch", "step")}
        row["ema_decay"] = self.decay
        io.save_torch(self.recorder.exp_dir / MODEL_EMA, self.recorder.model_file(self.ema.module, row))


class ProcessSeeds(Callback):
    """Python's and numpy's generators apart in each process of a multi-process job, as training starts.

    Lightning seeds every process alike when it sets them up (`reset_seed`), which would give augmentations
    that draw from those generators (without loader workers) the same draws in every process; torch's
    generator stays alike, since the samplers' shuffles must agree. The first process is left as it is."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        seed_process(self.seed)


class AugmentationSchedule(Callback):
    """Moves the probability of augmenting a training image from `start_p` to `end_p` over each stage's
    epochs: linearly, or with `exponent_factor` k > 0 along `1 − exp(−k·t)` (most of the change early;
    k < 0: most of it late), t going from 0 at a stage's first epoch to 1 at its last.

    The whole `data.augmentations` pipeline is applied with that probability (an albumentations
    `Compose` gets it as its `p`; any other callable is skipped with probability 1 − p), in the training
    process and in every loader worker alike, so the draws stay deterministic per epoch and worker.
    Each epoch's value is in metrics.csv as `aug_p`. `stages` limits it to the stages named.
    """

    def __init__(
        self,
        start_p: float = 1.0,
        end_p: float = 0.0,
        exponent_factor: float | None = None,
        stages: list[str] | None = None,
    ) -> None:
        for name, value in (("start_p", start_p), ("end_p", end_p)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"AugmentationSchedule: {name} must be a probability between 0 and 1, got {value}"
                )
        self.start_p, self.end_p = float(start_p), float(end_p)
        self.exponent_factor = exponent_factor
        self.stages = stages

    def p_at(self, epoch: int, epochs: int) -> float:
        """The probability in epoch `epoch` (from 0) of a stage of `epochs` epochs."""
        t = epoch / (epochs - 1) if epochs > 1 else 1.0
        k = self.exponent_factor
        if k:
            t = (1.0 - math.exp(-k * t)) / (1.0 - math.exp(-k))
        return self.start_p + (self.end_p - self.start_p) * t

    def _transform(self, trainer: L.Trainer) -> Any:
        loader = trainer.train_dataloader
        transform = getattr(getattr(loader, "dataset", None), "transform", None)
        if not hasattr(transform, "set_p"):
            raise ConfigError(
                "AugmentationSchedule goes in the config's `callbacks`, where it finds mlic's training "
                "loader; this Trainer's loader has no mlic ImageTransform"
            )
        return transform

    def on_train_epoch_start(self, trainer: L.Trainer, module: ClassifierModule) -> None:
        stage = module.stage.name if module.stage else ""
        transform = self._transform(trainer)
        if self.stages is not None and stage not in self.stages:
            transform.set_p(None)
            return
        p = self.p_at(trainer.current_epoch, int(trainer.max_epochs or 1))
        transform.set_p(p)
        module.log("aug_p", p, on_step=False, on_epoch=True)

    def on_train_end(self, trainer: L.Trainer, module: ClassifierModule) -> None:
        self._transform(trainer).set_p(None)  # what comes after (the next stage, swa.py) starts unscheduled


class EpochProgressBar(TQDMProgressBar):
    """Lightning's progress bar, named for the stage and counting its epochs from 1 of its total
    ("full: epoch 1/6"), as metrics.csv, report.md and the checkpoints' names do."""

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        super().on_train_epoch_start(trainer, module, *args)
        stage = getattr(getattr(module, "stage", None), "name", None) or "training"
        self.train_progress_bar.set_description(
            f"{stage}: epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        )
