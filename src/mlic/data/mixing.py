"""MixUp and CutMix for multi-hot targets, applied to whole batches in the training step.

MixUp (Zhang et al. 2018) blends each image with another of the batch, `λ·x + (1 − λ)·x[perm]`;
CutMix (Yun et al. 2019) pastes a box of the other image, and λ is the share of the image left
unpasted. λ is drawn from Beta(alpha, alpha) once per batch. The loss is mixed with the same λ,
`λ·loss(logits, y) + (1 − λ)·loss(logits, y[perm])`: for binary cross-entropy that is the loss on the
mixed targets `λ·y + (1 − λ)·y[perm]`, and every other loss keeps its 0/1 targets.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from mlic.config.schema import Mixing


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a box of about `(1 − lam)` of the image, centred at random and
    clipped to the image (the CutMix paper's sampling)."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def mix_batch(
    x: torch.Tensor, mixing: Mixing, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """(images, permutation, λ): the batch mixed with a shuffled copy of itself, or unchanged with
    permutation None (and λ 1) when this batch draws no mixing."""
    if len(x) < 2 or rng.random() >= mixing.p:
        return x, None, 1.0
    lam = float(rng.beta(mixing.alpha, mixing.alpha))
    perm = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    strategy = mixing.strategy
    if strategy == "both":
        strategy = "mixup" if rng.random() < 0.5 else "cutmix"
    if strategy == "mixup":
        return x * lam + x[perm] * (1.0 - lam), perm, lam
    top, bottom, left, right = cutmix_box(x.shape[-2], x.shape[-1], lam, rng)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[perm, ..., top:bottom, left:right]
    # λ from the area actually pasted (the box is clipped at the borders)
    lam = 1.0 - (bottom - top) * (right - left) / (x.shape[-2] * x.shape[-1])
    return mixed, perm, lam


def mixed_loss(
    loss_fn: Callable, logits: torch.Tensor, y: torch.Tensor, perm: torch.Tensor | None, lam: float
) -> torch.Tensor:
    """The loss of a mixed batch: `λ·loss(logits, y) + (1 − λ)·loss(logits, y[perm])`."""
    if perm is None:
        return loss_fn(logits, y)
    return lam * loss_fn(logits, y) + (1.0 - lam) * loss_fn(logits, y[perm])


__all__ = ["mix_batch", "mixed_loss", "cutmix_box"]
