"""Segmentation losses: the soft Dice loss, and a sum of losses (Dice + cross-entropy, the default)."""

from __future__ import annotations

import torch
from torch import nn


class DiceLoss(nn.Module):
    """1 − soft Dice, per class over the batch's pixels, averaged over the classes present in the batch
    (a class absent from the batch's targets adds nothing). `mode`: "multiclass" (softmax over the
    classes) or "multilabel" (a sigmoid per class). `smooth` keeps an empty class's ratio finite.
    Targets are N×C×H×W probabilities, as mlic gives them."""

    def __init__(self, mode: str = "multiclass", smooth: float = 1.0, eps: float = 1e-7) -> None:
        super().__init__()
        if mode not in ("multiclass", "multilabel"):
            raise ValueError(f"DiceLoss: mode must be 'multiclass' or 'multilabel', got {mode!r}")
        self.mode = mode
        self.smooth = smooth
        self.eps = eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        probs = logits.softmax(1) if self.mode == "multiclass" else logits.sigmoid()
        dims = (0, *range(2, logits.dim()))
        intersection = (probs * targets).sum(dims)
        cardinality = (probs + targets).sum(dims)
        dice = (2 * intersection + self.smooth) / (cardinality + self.smooth).clamp_min(self.eps)
        present = targets.sum(dims) > 0
        loss = (1 - dice) * present
        return loss.sum() / present.sum().clamp_min(1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, smooth={self.smooth}"


class SumLoss(nn.Module):
    """The weighted sum of losses: `SumLoss(DiceLoss(), nn.CrossEntropyLoss())`, or with weights
    `SumLoss(DiceLoss(), nn.CrossEntropyLoss(), weights=(1.0, 0.5))`."""

    def __init__(self, *losses: nn.Module, weights: tuple[float, ...] | None = None) -> None:
        super().__init__()
        if not losses:
            raise ValueError("SumLoss needs at least one loss")
        self.losses = nn.ModuleList(losses)
        self.weights = tuple(float(w) for w in (weights or (1.0,) * len(losses)))
        if len(self.weights) != len(losses):
            raise ValueError(f"SumLoss: {len(self.weights)} weights for {len(losses)} losses")

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sum(w * loss(logits, targets) for w, loss in zip(self.weights, self.losses))

    def extra_repr(self) -> str:
        return f"weights={self.weights}"
