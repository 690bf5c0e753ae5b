"""The LightningModule: one training and evaluation step for every stage."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from mlic.config.schema import Config, Mixing, Stage
from mlic.data.mixing import mix_batch, mixed_loss
from mlic.engine.evaluator import Gather, SplitEvaluator
from mlic.engine.optim import build_optimizer, build_scheduler
from mlic.experiment.checkpoints import CHECKPOINT_KEY, checkpoint_info
from mlic.models.build import frozen_norm_modules, frozen_parameter_names, set_frozen
from mlic.models.tta import flip_views
from mlic.tasks import Task, get_task

log = logging.getLogger("mlic")


class ClassifierModule(L.LightningModule):
    """Wraps a timm model with its loss; each stage sets freezing and builds a fresh optimizer."""

    def __init__(
        self,
        model: nn.Module,
        loss: Callable,
        optimizer: Callable,
        scheduler: Callable | None,
        threshold: float = 0.5,
        freeze_bn: bool = True,
        channels_last: bool = False,
        compile: bool | dict = False,
        mixing: Mixing | None = None,
        seed: int = 0,
        task: str | Task = "multi_label",
    ) -> None:
        super().__init__()
        # channels-last weights and inputs: the faster convolution kernels on CPUs and GPUs alike
        self.channels_last = channels_last
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        # torch.compile's arguments, or None; the compiled wrapper is built on the first step and kept
        # outside the module's children, so checkpoints hold the plain model's keys
        self.compile_args = (compile if isinstance(compile, dict) else {}) if compile else None
        self._compiled: list[Callable] = []
        # MixUp/CutMix of the training batches; its draws are seeded per (seed, process, stage, epoch)
        self.mixing = mixing
        self.seed = seed
        self._mix_rng = np.random.default_rng(seed)
        self.loss_fn = loss
        self.task = get_task(task)  # its activation and metrics score every evaluation
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.threshold = threshold
        self.freeze_bn = freeze_bn
        self.stage: Stage | None = None
        self._frozen_norms: list[nn.Module] = []
        # each split's evaluation (`mlic.engine.evaluator`): its `result` is the split's last evaluation
        self.evaluators = {split: SplitEvaluator(self.task, loss, threshold) for split in ("valid", "test")}
        # the loss of predicting each class's train frequency (set by the runner), logged beside the first batch's
        self.prior_loss: float | None = None
        # Config(tta=...) for the evaluations after training (`eval_module`, the final one); None while training
        self.tta: str | None = None

    @classmethod
    def from_config(cls, model: nn.Module, config: Config) -> ClassifierModule:
        """`model` with the config's loss, optimizer, scheduler, threshold and model settings."""
        return cls(
            model,
            config.loss,
            config.optimizer,
            config.scheduler,
            threshold=config.threshold,
            freeze_bn=config.model.freeze_bn,
            channels_last=config.model.channels_last,
            compile=config.model.compile,
            mixing=config.mixing,
            seed=config.seed,
            task=config.task,
        )

    # ----------------------------------------------------------------------------------------- stage

    def set_stage(self, stage: Stage) -> None:
        """Freeze or unfreeze the backbone for `stage`; the next `fit` builds its optimizer afresh."""
        self.stage = stage
        where = f"stages.{stage.name}.freeze"
        frozen = frozen_parameter_names(self.model, stage.freeze_backbone, stage.freeze, where)
        set_frozen(self.model, frozen)
        # requires_grad=False alone keeps updating BatchNorm running statistics in train mode
        self._frozen_norms = (
            frozen_norm_modules(self.model, frozen, stage.freeze_backbone) if self.freeze_bn else []
        )
        self.train(self.training)

    def train(self, mode: bool = True) -> ClassifierModule:
        super().train(mode)
        if mode:
            for m in getattr(self, "_frozen_norms", []):
                m.eval()
        return self

    # ------------------------------------------------------------------------------------------ steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.compile_args is None:
            return self.model(x)
        if not self._compiled:
            self._compiled.append(torch.compile(self.model, **self.compile_args))
        return self._compiled[0](x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.mixing is None:
            loss = self.loss_fn(self(x), y)
        else:
            x, perm, lam = mix_batch(x, self.mixing, self._mix_rng)
            loss = mixed_loss(self.loss_fn, self(x), y, perm, lam)
        if batch_idx == 0 and self.trainer.global_step == 0 and self.trainer.current_epoch == 0:
            prior = f" (prior loss {self.prior_loss:.4f})" if self.prior_loss is not None else ""
            log.info(
                "stage %s: first-batch loss %.4f%s",
                self.stage.name if self.stage else "?",
                float(loss.detach()),  # one wait per stage, not per step
                prior,
            )
        # the epoch's mean, weighted by batch size: in the logged metrics (metrics.csv reads it from there)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def on_train_epoch_start(self) -> None:
        stage = zlib.crc32((self.stage.name if self.stage else "").encode())
        self._mix_rng = np.random.default_rng([self.seed, self.global_rank, stage, self.current_epoch])

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> None:
        x, y = batch
        if self.tta is None:
            logits = self(x).float()
        else:  # the final evaluation of a run with Config(tta=...): each image and its mirror
            logits = flip_views(self, x, self.task.softmax, self.task.pixelwise)
        self.evaluators[split].update(logits, y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "valid")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _gather_every_sample_once(
        self, logits: torch.Tensor, targets: torch.Tensor, split: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split's logits and targets from every process, in the data set's order, each
        sample once. Lightning's DistributedSampler (no shuffle) gives rank r the samples r, r+W, r+2W,
        ... and pads the last round with repeats so that every rank has as many: the ranks' outputs
        are interleaved back and the padding cut off."""
        logits, targets = self.all_gather(logits), self.all_gather(targets)  # (world, per rank, C)
        loader = self.trainer.val_dataloaders if split == "valid" else self.trainer.test_dataloaders
        loader = loader[0] if isinstance(loader, (list, tuple)) else loader
        sampler = getattr(loader, "sampler", None)
        if not (isinstance(sampler, DistributedSampler) and not sampler.shuffle):
            return logits.flatten(0, 1), targets.flatten(0, 1)  # not Lightning's sampler: as gathered
        n = len(loader.dataset)

        def in_order(gathered: torch.Tensor) -> torch.Tensor:
            return gathered.transpose(0, 1).reshape(-1, gathered.shape[-1])[:n]

        return in_order(logits), in_order(targets)

    def _eval_epoch_end(self, split: str) -> None:
        gather = Gather(
            lambda r, t: self._gather_every_sample_once(r, t, split), lambda v: self.all_gather(v).sum()
        )
        result = self.evaluators[split].compute(gather if self.trainer.world_size > 1 else None)
        if result is not None:  # Lightning's logged metrics: the progress bar, metrics.csv, the loggers
            self.log_dict({f"{split}/{k}": v for k, v in result.metrics.items()}, prog_bar=split == "valid")

    def on_validation_epoch_start(self) -> None:
        self.evaluators["valid"].reset()

    def on_test_epoch_start(self) -> None:
        self.evaluators["test"].reset()

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("valid")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        metrics = {
            k: v for k, v in self.trainer.callback_metrics.items() if getattr(v, "numel", lambda: 0)() == 1
        }
        stage = self.stage.name if self.stage else ""
        checkpoint[CHECKPOINT_KEY] = checkpoint_info(stage, self.trainer.current_epoch + 1, metrics)

    # -------------------------------------------------------------------------------------- optimizer

    def build_optimizer(self) -> torch.optim.Optimizer:
        """A fresh optimizer over the trainable parameters, with the stage's (discriminative) LRs."""
        return build_optimizer(self.model, self.stage or Stage("full", epochs=1), self.optimizer_factory)

    def configure_optimizers(self) -> Any:
        if self.trainer.world_size > 1 and self.stage is not None:
            # the first process ran the stage's range test alone: every process trains with its LR
            self.stage = replace(self.stage, lr=self.trainer.strategy.broadcast(self.stage.lr, src=0))
        optimizer = self.build_optimizer()
        if self.scheduler_factory is None:
            return optimizer
        total = self.trainer.estimated_stepping_batches
        scheduler, interval = build_scheduler(self.scheduler_factory, optimizer, total)
        config = {"scheduler": scheduler, "interval": interval}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "valid/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}
