"""Segmentation metrics: per-image confusion counts, and the IoU and Dice computed from them."""

from __future__ import annotations

import numpy as np
import torch


def confusion_counts(
    logits: torch.Tensor, targets: torch.Tensor, multilabel: bool, threshold: float
) -> torch.Tensor:
    """Per image and class: true positive, false positive and false negative pixels, N × 3C (tp…, fp…, fn…).

    The prediction is the most probable class of each pixel (multi-class), or every class whose sigmoid
    reaches `threshold` (multi-label); `targets` are N×C×H×W one-hot (a soft target counts where it is
    highest, or at least 0.5 for multi-label)."""
    num_classes = logits.shape[1]
    if multilabel:
        pred = torch.sigmoid(logits) >= threshold
        true = targets >= 0.5
    else:
        classes = torch.arange(num_classes, device=logits.device).view(1, -1, 1, 1)
        pred = logits.argmax(1, keepdim=True) == classes
        true = targets.argmax(1, keepdim=True) == classes
    dims = tuple(range(2, logits.dim()))
    tp = (pred & true).sum(dims)
    fp = (pred & ~true).sum(dims)
    fn = (~pred & true).sum(dims)
    return torch.cat([tp, fp, fn], dim=1).float()


def iou_dice(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class IoU = tp/(tp+fp+fn) and Dice = 2tp/(2tp+fp+fn) over every pixel of every image of
    `counts` (N × 3C); NaN for a class neither present nor predicted anywhere."""
    tp, fp, fn = np.split(np.asarray(counts, dtype=np.float64).sum(0), 3)
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(union > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return iou, dice


def nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
