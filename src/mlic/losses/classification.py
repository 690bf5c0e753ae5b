"""Multi-label losses for `Config(loss=...)`: weighted BCE, focal, label-smoothed BCE and asymmetric (ASL).

Each is an `nn.Module` called as `loss(logits, targets)` on (batch, classes) tensors, targets 0/1, and
computes in float32 (training may run under autocast). `reduction` is "mean" (over all batch * classes
elements, the default), "sum" or "none". Before training, the training code calls `setup(train_targets)` on a
loss that has it; `BCEWithLogitsLoss(pos_weight="auto")` takes its per-class weights from there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BCEWithLogitsLoss", "FocalLoss", "LabelSmoothingBCE", "AsymmetricLoss"]

REDUCTIONS = ("mean", "sum", "none")
# Floor of a focusing base `1 - p_t` before the power: keeps the gradient finite where a saturated sigmoid
# makes the base exactly 0 (0 ** gamma has an infinite derivative for 0 < gamma < 1); the value is unchanged.
_TINY = torch.finfo(torch.float32).tiny


def _check_reduction(name: str, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")


def _check_gamma(name: str, arg: str, gamma: float) -> None:
    if not gamma >= 0:
        raise ValueError(f"{name}: {arg} must be >= 0, got {gamma!r}")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class BCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy on logits, optionally weighting the positives of each class.

    Args:
        pos_weight: None (no weighting, the default), one weight per class (a list or tuple of floats), or
            "auto": per-class `num_negatives / num_positives` of the train labels given to `setup`.
        reduction: "mean" (default), "sum" or "none".
        max_pos_weight: upper bound of the "auto" weights (default 100.0).
    """

    def __init__(
        self,
        pos_weight: Sequence[float] | str | None = None,
        reduction: str = "mean",
        max_pos_weight: float = 100.0,
    ):
        super().__init__()
        _check_reduction("BCEWithLogitsLoss", reduction)
        if isinstance(pos_weight, str) and pos_weight != "auto":
            raise ValueError(
                f"BCEWithLogitsLoss: pos_weight must be None, a list of floats or 'auto', got {pos_weight!r}"
            )
        if not max_pos_weight > 0:
            raise ValueError(f"BCEWithLogitsLoss: max_pos_weight must be > 0, got {max_pos_weight!r}")
        self.auto = isinstance(pos_weight, str)
        weight = None
        if pos_weight is not None and not self.auto:
            weight = torch.as_tensor(pos_weight, dtype=torch.float32)
            if weight.ndim != 1 or weight.numel() == 0 or bool((weight < 0).any()):
                raise ValueError(
                    f"BCEWithLogitsLoss: pos_weight must be a non-empty list of floats >= 0, got {pos_weight!r}"
                )
        self.reduction = reduction
        self.max_pos_weight = max_pos_weight
        # Not persistent: the config rebuilds it (and "auto" reruns setup), so checkpoints don't depend on it.
        self.register_buffer("pos_weight", weight, persistent=False)

    def setup(self, train_targets: np.ndarray) -> None:
        """For pos_weight="auto": weights = negatives / positives per class of `train_targets` (N, C), at most
        `max_pos_weight`; a class without positives gets 1.0. Does nothing for any other pos_weight."""
        if not self.auto:
            return
        targets = np.asarray(train_targets, dtype=np.float64)
        if targets.ndim != 2:
            raise ValueError(
                f"BCEWithLogitsLoss.setup: train_targets must be (N, C), got shape {targets.shape}"
            )
        pos = targets.sum(axis=0)
        neg = (1.0 - targets).sum(axis=0)
        weight = np.divide(neg, pos, out=np.ones_like(pos), where=pos > 0)
        self.pos_weight = torch.as_tensor(np.minimum(weight, self.max_pos_weight), dtype=torch.float32)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = self.pos_weight
        if weight is None and self.auto:
            raise RuntimeError(
                "BCEWithLogitsLoss(pos_weight='auto') has no weights yet: call setup(train_targets) before the "
                "first forward."
            )
        if weight is not None:
            if weight.numel() != logits.shape[-1]:
                raise ValueError(
                    f"BCEWithLogitsLoss: pos_weight has {weight.numel()} values but the logits have "
                    f"{logits.shape[-1]} classes"
                )
            weight = weight.to(logits.device)
        return F.binary_cross_entropy_with_logits(
            logits.float(), targets.float(), pos_weight=weight, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        if self.auto:
            spec = f"'auto', max_pos_weight={self.max_pos_weight}"
        else:
            spec = None if self.pos_weight is None else [round(w, 4) for w in self.pos_weight.tolist()]
        return f"pos_weight={spec}, reduction={self.reduction!r}"


class FocalLoss(nn.Module):
    """Binary sigmoid focal loss (Lin et al. 2017), as `torchvision.ops.sigmoid_focal_loss`.

    `loss = alpha_t * (1 - p_t) ** gamma * BCE(logits, targets)`, p_t the probability of the true label.

    Args:
        alpha: weight of the positives in [0, 1], negatives get `1 - alpha` (default 0.25); None or a
            negative value for no weighting.
        gamma: focusing exponent >= 0 (default 2.0); 0 gives (alpha-weighted) BCE.
        reduction: "mean" over all elements (default), "sum" or "none".
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0, reduction: str = "mean"):
        super().__init__()
        if alpha is not None and not alpha <= 1:
            raise ValueError(f"FocalLoss: alpha must be in [0, 1], or None/negative for none, got {alpha!r}")
        _check_gamma("FocalLoss", "gamma", gamma)
        _check_reduction("FocalLoss", reduction)
        self.alpha = None if alpha is None or alpha < 0 else alpha
        self.gamma = gamma
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        p = torch.sigmoid(logits)
        ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce * (1 - p_t).clamp(min=_TINY) ** self.gamma
        if self.alpha is not None:
            loss = (self.alpha * targets + (1 - self.alpha) * (1 - targets)) * loss
        return _reduce(loss, self.reduction)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, reduction={self.reduction!r}"


class LabelSmoothingBCE(nn.Module):
    """Binary cross-entropy on logits with targets pulled toward 0.5: `t * (1 - smoothing) + 0.5 * smoothing`.

    Args:
        smoothing: how far toward 0.5, in [0, 1) (default 0.1); 0 gives plain BCE.
        reduction: "mean" (default), "sum" or "none".
    """

    def __init__(self, smoothing: float = 0.1, reduction: str = "mean"):
        super().__init__()
        if not 0 <= smoothing < 1:
            raise ValueError(f"LabelSmoothingBCE: smoothing must be in [0, 1), got {smoothing!r}")
        _check_reduction("LabelSmoothingBCE", reduction)
        self.smoothing = smoothing
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.float() * (1 - self.smoothing) + 0.5 * self.smoothing
        return F.binary_cross_entropy_with_logits(logits.float(), targets, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}, reduction={self.reduction!r}"


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (ASL, Ben-Baruch et al. 2020) for multi-label classification.

    The same terms as `timm.loss.AsymmetricLossMultiLabel` (reduction "sum" equals its `-loss.sum()`): the
    negatives' probability is shifted by `clip`, each term is focused by `(1 - p_t) ** gamma`, with separate
    gammas for positives and negatives, and probabilities are clamped to `eps` before the log.

    Args:
        gamma_pos: focusing exponent of the positives, >= 0 (default 0.0).
        gamma_neg: focusing exponent of the negatives, >= 0 (default 4.0).
        clip: probability margin added to the negatives, in [0, 1) (default 0.05); 0 disables it.
        eps: lowest probability before the log, > 0 (default 1e-8).
        reduction: "mean" over all elements (default), "sum" or "none".
    """

    def __init__(
        self,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        eps: float = 1e-8,
        reduction: str = "mean",
    ):
        super().__init__()
        _check_gamma("AsymmetricLoss", "gamma_pos", gamma_pos)
        _check_gamma("AsymmetricLoss", "gamma_neg", gamma_neg)
        if not 0 <= clip < 1:
            raise ValueError(f"AsymmetricLoss: clip must be in [0, 1), got {clip!r}")
        if not eps > 0:
            raise ValueError(f"AsymmetricLoss: eps must be > 0, got {eps!r}")
        _check_reduction("AsymmetricLoss", reduction)
        self.gamma_pos = gamma_pos
        self.gamma_neg = gamma_neg
        self.clip = clip
        self.eps = eps
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        p_pos = torch.sigmoid(logits)
        p_neg = 1 - p_pos
        if self.clip > 0:
            p_neg = (p_neg + self.clip).clamp(max=1)
        log_pos, log_neg = torch.log(p_pos.clamp(min=self.eps)), torch.log(p_neg.clamp(min=self.eps))
        loss = targets * log_pos + (1 - targets) * log_neg
        if self.gamma_pos > 0 or self.gamma_neg > 0:
            p_t = p_pos * targets + p_neg * (1 - targets)
            gamma = self.gamma_pos * targets + self.gamma_neg * (1 - targets)
            loss = loss * (1 - p_t).clamp(min=_TINY).pow(gamma)
        return _reduce(-loss, self.reduction)

    def extra_repr(self) -> str:
        return (
            f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}, eps={self.eps}, "
            f"reduction={self.reduction!r}"
        )
