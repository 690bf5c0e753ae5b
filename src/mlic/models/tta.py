"""Test-time augmentation (`Config(tta="hflip")`): each image is predicted as it is and mirrored
left-right, and the two predictions are averaged as probabilities. The result is returned as logits
whose activation (the task's sigmoid or softmax) gives that average back, so everything after the
model (losses, metrics, thresholds, calibration, export) reads it as it reads one prediction. A
segmentation model's mirrored masks are mirrored back before they are averaged."""

from __future__ import annotations

import math

import torch
from torch import nn

VIEWS = ("hflip",)  # the values Config(tta=...) takes


def averaged(a: torch.Tensor, b: torch.Tensor, softmax: bool) -> torch.Tensor:
    """Logits whose activation is the mean of `a`'s and `b`'s, computed in log space (no clipping, so
    probabilities near 0 or 1 keep their order)."""
    if softmax:
        both = torch.stack([torch.log_softmax(a, 1), torch.log_softmax(b, 1)])
        return torch.logsumexp(both, 0) - math.log(2.0)
    positive = torch.logsumexp(torch.stack([nn.functional.logsigmoid(a), nn.functional.logsigmoid(b)]), 0)
    negative = torch.logsumexp(torch.stack([nn.functional.logsigmoid(-a), nn.functional.logsigmoid(-b)]), 0)
    return positive - negative  # log(p / (1 - p)) of p = the mean of the two sigmoids


def flip_views(model: nn.Module, x: torch.Tensor, softmax: bool, pixelwise: bool) -> torch.Tensor:
    """The model's logits of `x` and of its mirror image, averaged as probabilities (`averaged`)."""
    straight = model(x).float()
    mirrored = model(torch.flip(x, [-1])).float()
    if pixelwise:  # a mask of the mirror image, mirrored back onto the image
        mirrored = torch.flip(mirrored, [-1])
    return averaged(straight, mirrored, softmax)


class FlipTTA(nn.Module):
    """`model` with test-time augmentation baked in (what predict.py runs and export.py exports)."""

    def __init__(self, model: nn.Module, softmax: bool, pixelwise: bool) -> None:
        super().__init__()
        self.model, self.softmax, self.pixelwise = model, softmax, pixelwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return flip_views(self.model, x, self.softmax, self.pixelwise)


__all__ = ["VIEWS", "FlipTTA", "averaged", "flip_views"]
