"""`task="segmentation"` (a class per pixel, softmax) and `task="multilabel_segmentation"` (a mask per
class, sigmoids): segmentation-models-pytorch models; IoU and Dice. Its targets are C×H×W one-hot masks in
the batches, and each image's pixel share per class in the label table."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mlic.losses.segmentation import DiceLoss, SumLoss
from mlic.metrics import classification as m
from mlic.metrics.segmentation import confusion_counts, iou_dice, nanmean
from mlic.tasks.base import Task
from mlic.utils.markdown import rows_table


class Segmentation(Task):
    """Semantic segmentation: a class per pixel (softmax), or with `multilabel` a mask per class that may
    overlap (a sigmoid per class, `threshold`). Models are segmentation-models-pytorch architectures;
    masks are read by `mlic.data.masks`. An evaluation keeps, per image, the true-positive, false-positive
    and false-negative pixels of each class (`mlic.metrics.segmentation.confusion_counts`), so a split's IoU and Dice
    are exact over all its pixels whatever the batch size or the number of processes."""

    family = "smp"
    pixelwise = True
    recomputes_loss = False
    columns = ("loss", "iou", "dice")
    default_monitor = "valid/iou"

    def __init__(self, multilabel: bool) -> None:
        self.multilabel = multilabel
        self.name = "multilabel_segmentation" if multilabel else "segmentation"
        self.output = (
            "per-pixel class probabilities (a sigmoid per class), N×C×H×W at the input size"
            if multilabel
            else "per-pixel class probabilities (softmax over the classes, summing to 1), N×C×H×W at the input size"
        )

    def default_loss(self) -> nn.Module:
        if self.multilabel:
            return SumLoss(DiceLoss("multilabel"), nn.BCEWithLogitsLoss())
        return SumLoss(DiceLoss("multiclass"), nn.CrossEntropyLoss())

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

    def eval_rows(self, logits, targets, threshold):
        counts = confusion_counts(logits, targets, self.multilabel, threshold)
        share = targets.float().mean(dim=tuple(range(2, targets.dim())))  # each class's share of the pixels
        return counts, share

    def split_outputs(self, rows, targets):
        return rows.double().cpu().numpy(), targets.float().cpu().numpy()

    def metrics(self, probs, targets, threshold):
        """Mean IoU and Dice over the classes (a class absent from the split and never predicted is left
        out), each from its pixels over the whole split."""
        iou, dice = iou_dice(probs)
        return {"iou": nanmean(iou), "dice": nanmean(dice)}

    def prior_logits(self, targets, pos_weight):
        """Each class's share of the train pixels: log p for softmax, its log-odds for sigmoids."""
        if self.multilabel:
            return m.prior_logits(targets, pos_weight)
        p = m.class_priors(targets)
        return np.log(p / p.sum())

    def loss_probe(self, targets):
        rows = torch.from_numpy(np.array(targets, dtype=np.float32))
        return rows[:, :, None, None].expand(-1, -1, 8, 8).contiguous()

    def per_image(self, probs):
        """Each class's share of the image's pixels in the prediction (most probable class, or at least 0.5)."""
        if self.multilabel:
            hits = probs >= 0.5
        else:
            hits = probs.argmax(1)[:, None] == np.arange(probs.shape[1])[None, :, None, None]
        return hits.reshape(len(probs), probs.shape[1], -1).mean(-1)

    def per_class_rows(self, classes, supports, outputs, threshold, thresholds):
        """Each class's share of the pixels, then its IoU and Dice, per evaluated split."""
        rows: list[dict[str, Any]] = [{"class": c} for c in classes]
        for split, (counts, shares) in outputs.items():
            iou, dice = iou_dice(counts)
            for j, row in enumerate(rows):
                row[f"{split} pixels %"] = 100.0 * float(shares[:, j].mean())
                row[f"{split} IoU"] = float(iou[j])
                row[f"{split} Dice"] = float(dice[j])
        return rows

    def report_section(self, exp_dir, classes, rows, outputs) -> str:
        return (
            "\n## Per class\n\n`pixels %` is the class's share of the split's pixels in the true masks; IoU "
            "and Dice count every pixel of the split (empty: the class is neither present nor predicted)."
            f"\n\n{rows_table(rows, '.3f')}\n"
        )

    def predictions(self, classes, probs, thresholds, top_k):
        """Each class's share of the image's predicted pixels, then `predicted`: the classes that cover
        any pixel, `|`-separated (the masks themselves: `predict.py --masks DIR`)."""
        columns: dict[str, list] = {name: probs[:, j].tolist() for j, name in enumerate(classes)}
        columns["predicted"] = ["|".join(c for c, share in zip(classes, row) if share > 0) for row in probs]
        return columns
