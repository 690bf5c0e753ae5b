"""What differs by task, one module per task: the default loss and monitor, the
activation that turns logits into probabilities, the metrics, the prior head, the per-class section
of report.md and the predictions table. Everything else (config, stages, range test, SWA, EMA,
resume, `--test`, export, predict) is shared and asks the config's task.

- `MultiLabel` (`task="multi_label"`, the default): any number of classes per image; sigmoid; mAP,
  ROC-AUC, F1 at a threshold, per-class thresholds tuned on valid.
- `SingleLabel` (`task="single_label"`): exactly one class per image, from a folder per class or a
  CSV; softmax; accuracy, top-5 accuracy (more than five classes), macro F1, a confusion matrix.
- `Segmentation` (`task="segmentation"`, `task="multilabel_segmentation"`): a class per pixel (softmax)
  or a mask per class (sigmoids), segmentation-models-pytorch models; IoU and Dice. Its targets are
  C×H×W one-hot masks in the batches, and each image's pixel share per class in the label table.

Targets are a one-hot float matrix (rows × classes) for both, so samplers, the cache, `data_fraction`,
mixing (the loss mixed with λ) and every loss that takes probability targets
(`torch.nn.CrossEntropyLoss` with `label_smoothing` among them) work unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

Outputs = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (probabilities, targets)


class Task:
    """The interface every task implements (see the module's docstring)."""

    name: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]  # metric columns of a split, `loss` first, in table order
    default_monitor: ClassVar[str]
    tunes_thresholds: ClassVar[bool] = False  # per-class thresholds tuned on valid (`thresholds.json`)
    output: ClassVar[str]  # what the exported model returns, in words (export.json)
    family: ClassVar[str] = "timm"  # which library builds its models: "timm", or "smp" for segmentation
    pixelwise: ClassVar[bool] = False  # targets are masks (segmentation): read with the images, no cache
    softmax: ClassVar[bool] = False  # its classes share one softmax (single-label): one temperature
    recomputes_loss: ClassVar[bool] = True  # the loss can be recomputed from the gathered `eval_rows`

    def default_loss(self) -> nn.Module:
        raise NotImplementedError

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities from a batch of logits (N × C)."""
        raise NotImplementedError

    def metrics(self, probs: np.ndarray, targets: np.ndarray, threshold: float) -> dict[str, float]:
        """The metrics of a whole split (its `eval_rows` and their targets), keyed by `columns` (without `loss`)."""
        raise NotImplementedError

    def eval_rows(
        self, logits: torch.Tensor, targets: torch.Tensor, threshold: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What an evaluation keeps of one batch until the split ends, a row per image: (the logits, the
        targets) for classification; a segmentation task keeps per-image counts instead of its masks."""
        return logits, targets

    def split_outputs(self, rows: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """A whole split's `eval_rows` as what `metrics`, the report and thresholds read: probabilities."""
        return self.activate(rows.float()).cpu().numpy(), targets.float().cpu().numpy()

    def loss_probe(self, targets: np.ndarray) -> torch.Tensor:
        """A batch of targets shaped as the loss gets them, from rows of a label table's `targets`."""
        return torch.from_numpy(np.array(targets, dtype=np.float32))

    def per_image(self, probs: np.ndarray) -> np.ndarray:
        """One row per image (N × C) of a batch of `activate`d outputs, for the predictions table."""
        return probs

    def prior_logits(self, targets: np.ndarray, pos_weight: np.ndarray | None) -> np.ndarray:
        """The constant logits that fit the train labels best: the new head's starting bias."""
        raise NotImplementedError

    def per_class_rows(
        self,
        classes: list[str],
        supports: dict[str, np.ndarray],
        outputs: Outputs,
        threshold: float,
        thresholds: np.ndarray | None,
    ) -> list[dict[str, Any]]:
        """One row per class for report.md (`supports`: split -> images per class)."""
        raise NotImplementedError

    def report_section(
        self, exp_dir: Path, classes: list[str], rows: list[dict[str, Any]], outputs: Outputs
    ) -> str:
        """The task's sections of report.md after the best model's metrics (writes their plots)."""
        raise NotImplementedError

    def predictions(
        self, classes: list[str], probs: np.ndarray, thresholds: np.ndarray, top_k: int | None
    ) -> dict[str, list]:
        """The predictions table's columns after `image` (NaN rows: images that failed)."""
        raise NotImplementedError


def last_split(outputs: Outputs) -> str | None:
    return "test" if "test" in outputs else "valid" if "valid" in outputs else None
