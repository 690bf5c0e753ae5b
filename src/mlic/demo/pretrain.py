"""The demo's stand-in for ImageNet weights: a timm backbone trained as a 10-way classifier on
scikit-learn's 8x8 `load_digits` images (a different source of handwritten digits than the demo's MNIST)
rendered onto poster-like backgrounds, saved without its classifier (`pretrain_backbone`)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from mlic.demo.posters import POSTER_SIZE, crop_digit, render_pretrain_batch, sharpen_low_res
from mlic.utils import io

log = logging.getLogger("mlic")

DEMO_MODEL = "resnet10t"
PRETRAIN_EPOCHS = 10  # passes over the 1437 training digits of load_digits, each rendered afresh
PRETRAIN_BATCH = 16  # small batches: more updates per CPU second, which helps most from scratch
PRETRAIN_LR = 2e-3


def _sk_digits(seed: int) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    """scikit-learn's 8x8 digits as sharpened crops, split 80/20 (stratified, seeded): (x_tr, y_tr, x_te, y_te)."""

    data = load_digits()
    crops = [sharpen_low_res(crop_digit(im)) for im in data.images]
    x_tr, x_te, y_tr, y_te = train_test_split(
        crops, data.target, test_size=0.2, stratify=data.target, random_state=seed
    )
    return x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64)


class _Normalise:
    """Turn [0, 1] RGB batches into the model's normalised channels_last input."""

    def __init__(self, model) -> None:

        cfg = timm.data.resolve_data_config({}, model=model)
        self.mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)

    def __call__(self, x: np.ndarray):

        return ((torch.from_numpy(x) - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


def _evaluate(model, x: np.ndarray, y: np.ndarray, normalise: _Normalise) -> float:
    """Accuracy of ``model`` on pre-rendered images ``x`` (N, 3, H, W) in [0, 1]."""

    model.eval()
    with torch.no_grad():
        pred = np.concatenate(
            [model(normalise(x[i : i + 256])).argmax(1).numpy() for i in range(0, len(x), 256)]
        )
    return float((pred == y).mean())


def _fit(model, x_tr: list, y_tr: np.ndarray, img_size, epochs: int, rng, normalise: _Normalise) -> None:
    """Train with AdamW + warm-up/cosine LR on batches rendered afresh (curriculum over the run)."""

    steps = epochs * (len(x_tr) // PRETRAIN_BATCH)
    opt = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.05)
    warmup = min(20, steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * s / steps))
    )
    model.train()
    for step in range(steps):
        idx = rng.choice(len(x_tr), PRETRAIN_BATCH, replace=False)
        x = render_pretrain_batch([x_tr[i] for i in idx], img_size, rng, progress=step / steps)
        loss = F.cross_entropy(model(normalise(x)), torch.from_numpy(y_tr[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % (steps // epochs or 1) == 0:  # a line per epoch: the longest part of the build
            log.info(
                "pretraining: epoch %d of %d, loss %.3f", (step + 1) * epochs // steps, epochs, loss.item()
            )


def pretrain_backbone(
    model_name: str,
    out_path: Path,
    img_size: tuple[int, int] = POSTER_SIZE,
    epochs: int = PRETRAIN_EPOCHS,
    seed: int = 0,
) -> Path:
    """Pretrain timm ``model_name`` on rendered sklearn digits and save its classifier-free state_dict."""

    out_path = Path(out_path)
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 99])
    threads = torch.get_num_threads()
    torch.set_num_threads(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    try:
        model = timm.create_model(model_name, pretrained=False, num_classes=10)
        model = model.to(memory_format=torch.channels_last)
        normalise = _Normalise(model)
        x_tr, y_tr, x_te, y_te = _sk_digits(seed)
        x_val = render_pretrain_batch(x_te, img_size, rng)
        start = time.perf_counter()
        _fit(model, x_tr, y_tr, img_size, epochs, rng, normalise)
        acc = _evaluate(model, x_val, y_te, normalise)
        log.info(
            "pretrained %s on sklearn digits: %d epochs in %.0f s, held-out accuracy %.1f%% (%d poster-like "
            "renders of unseen digits)",
            model_name,
            epochs,
            time.perf_counter() - start,
            100 * acc,
            len(y_te),
        )
        model.reset_classifier(0)
        model = model.to(memory_format=torch.contiguous_format)
        io.save_torch(out_path, model.state_dict())
    finally:
        torch.set_num_threads(threads)
    return out_path
