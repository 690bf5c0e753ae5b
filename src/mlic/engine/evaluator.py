"""One split's evaluation as a small protocol, as torchmetrics' `Metric` or detectron2's
`DatasetEvaluator`: `reset`, `update` with each batch, `compute` at the split's end, which returns the
split's `SplitResult` (its metrics, and the probabilities and targets they came from) and keeps it as
`result` until the next `reset`.

What the task keeps of each batch (`Task.eval_rows`: the logits and targets; a segmentation task's
per-image pixel counts) stays on the device until `compute`, so the loop never waits on a copy to the
CPU. With several processes, `compute` takes a `Gather` that brings every process's rows together,
each sample once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mlic.tasks import Task


@dataclass
class SplitResult:
    """A split's metrics (`loss` first, then the task's), with the probabilities (or a segmentation
    task's pixel counts) and targets they were computed from: what thresholds and per-class tables read."""

    metrics: dict[str, float]
    probs: np.ndarray
    targets: np.ndarray


@dataclass
class Gather:
    """How a multi-process evaluation brings its parts together: `rows(logits, targets)` gives every
    sample once, in the data set's order; `total(tensor)` sums a tensor over the processes."""

    rows: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    total: Callable[[torch.Tensor], torch.Tensor]


class SplitEvaluator:
    """Evaluates one split with `task`'s metrics and `loss_fn` (see the module's docstring)."""

    def __init__(self, task: Task, loss_fn: Callable, threshold: float) -> None:
        self.task, self.loss_fn, self.threshold = task, loss_fn, threshold
        self.result: SplitResult | None = None
        self.reset()

    def reset(self) -> None:
        self._batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.result = None

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Keep what the task needs of one batch; return the batch's loss."""
        loss = self.loss_fn(logits, targets)
        rows, kept = self.task.eval_rows(logits.detach(), targets.detach(), self.threshold)
        self._batches.append((rows, kept, loss.detach() * len(logits)))
        return loss

    def compute(self, gather: Gather | None = None) -> SplitResult | None:
        """The split's result (None when no batch came), over every process with `gather`."""
        if not self._batches:
            return None
        rows = torch.cat([b[0] for b in self._batches])
        targets = torch.cat([b[1] for b in self._batches])
        loss_sum = torch.stack([b[2] for b in self._batches]).sum()
        count = torch.tensor(float(len(targets)), device=loss_sum.device)
        if gather is None:
            loss = float(loss_sum) / len(targets)
        else:  # every sample scored once, whatever the number of processes
            rows, targets = gather.rows(rows, targets)
            if self.task.recomputes_loss:
                with torch.no_grad():
                    loss = float(self.loss_fn(rows, targets))
            else:  # the batches' losses of every process (a padded repeat counts again)
                loss = float(gather.total(loss_sum)) / float(gather.total(count))
        probs, targets_np = self.task.split_outputs(rows, targets)
        metrics = {"loss": loss, **self.task.metrics(probs, targets_np, self.threshold)}
        self._batches = []
        self.result = SplitResult(metrics, probs, targets_np)
        return self.result
