"""LR range test: the sweep that records a curve (`range_test`). What is read from the curve (the
smoothing, the signal check, the suggestion rules, the log lines) is `mlic.engine.lr_curve`."""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mlic.config.schema import LRFinder
from mlic.engine.lr_curve import RangeTest, points_per_window, signal, smooth, suggest


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _cycle(loader: Iterable) -> Iterator:
    """Batches forever: a short loader is started again rather than cutting the sweep short."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training loader yields no batches")


@dataclass
class _Snapshot:
    """What a sweep changes and gives back: weights, optimizer state, random generators, train/eval modes.
    (Lightning's `isolate_rng` would cover the generators, but it does not restore them when the sweep
    raises, and a range test must leave everything as it was whatever happens.)"""

    weights: dict[str, Any]
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    modes: dict[nn.Module, bool]

    @classmethod
    def take(cls, model: nn.Module, optimizer: torch.optim.Optimizer) -> _Snapshot:
        return cls(
            copy.deepcopy(model.state_dict()),
            copy.deepcopy(optimizer.state_dict()),
            _rng_state(),
            {m: m.training for m in model.modules()},
        )

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        model.load_state_dict(self.weights)
        optimizer.load_state_dict(self.optimizer)
        _set_rng_state(self.rng)
        optimizer.zero_grad(set_to_none=True)
        for m, training in self.modes.items():
            m.training = training


class _Step:
    """One optimizer step on a batch (mixed precision when `autocast_dtype` is set), returning its loss."""

    def __init__(self, loss_fn: Callable, device: torch.device, autocast_dtype: torch.dtype | None) -> None:
        self.loss_fn, self.device, self.autocast_dtype = loss_fn, device, autocast_dtype
        self.scaler = torch.amp.GradScaler(device.type) if autocast_dtype == torch.float16 else None

    def __call__(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Any) -> float:
        x, y = batch
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        dtype = self.autocast_dtype
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            loss = self.loss_fn(model(x).float(), y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return float(loss.detach())


def _progress_bar(settings: LRFinder, label: str) -> tqdm:
    return tqdm(
        total=settings.num_steps,
        desc=f"LR range test{f' ({label})' if label else ''}",
        disable=None if settings.progress else True,  # None: shown on a terminal, not in logs
        leave=False,
        dynamic_ncols=True,
    )


def range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable,
    loss_fn: Callable,
    settings: LRFinder,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    label: str = "",
) -> RangeTest:
    """Sweep the LR exponentially over `settings.num_steps` optimizer steps; restore everything after.

    Every parameter group is scaled by one common factor, so the ratio between head and backbone LRs
    (discriminative LRs) is kept; the head's LR (the largest, without a group named 'head') follows
    `start_lr` → `end_lr`. The model's
    weights and buffers, the optimizer's state and all random generators are exactly what they were
    before, whatever happens during the sweep. A progress bar (`settings.progress`) names `label`.
    The sweep stops once a trailing average of the loss, as wide as the smoothing window, exceeds
    `settings.diverge` times its lowest value.
    """
    result = RangeTest(rule=settings.suggestion)
    snapshot = _Snapshot.take(model, optimizer)
    started = time.time()
    try:
        _sweep(
            model,
            optimizer,
            _Step(loss_fn, torch.device(device), autocast_dtype),
            loader,
            settings,
            label,
            result,
        )
    finally:
        snapshot.restore(model, optimizer)
    result.smoothed = smooth(result.lrs, result.losses, settings.window).tolist()
    result.seconds = time.time() - started
    result.signal = signal(result.lrs, result.losses, result.smoothed, settings.window)
    if result.signal is not None and result.signal.clear:  # no rule reads a curve that shows nothing
        result.suggestion = suggest(result.lrs, result.smoothed, settings.suggestion, result.signal.noise)
    return result


def _sweep(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step_with: _Step,
    loader: Iterable,
    settings: LRFinder,
    label: str,
    result: RangeTest,
) -> None:
    """The sweep's steps, each LR and loss appended to `result`, until the last step or divergence."""
    base = [g["lr"] for g in optimizer.param_groups]
    head = [g["lr"] for g in optimizer.param_groups if str(g.get("name", "")).startswith("head")]
    reference = head[0] if head else max(base)
    ratio = settings.end_lr / settings.start_lr
    batches = _cycle(loader)
    # a causal average as wide as the window (at least 5 steps), for the stop on divergence
    alpha = 2.0 / (max(5.0, points_per_window(settings)) + 1)
    avg, best = 0.0, math.inf
    bar = _progress_bar(settings, label)
    try:
        model.train()
        for step in range(settings.num_steps):
            lr = settings.start_lr * ratio ** (step / max(settings.num_steps - 1, 1))
            for group, group_lr in zip(optimizer.param_groups, base):
                group["lr"] = group_lr * lr / reference
            value = step_with(model, optimizer, next(batches))
            result.lrs.append(lr)
            result.losses.append(value)
            avg = (1 - alpha) * avg + alpha * value
            trailing = avg / (1 - (1 - alpha) ** (step + 1))
            bar.update(1)
            bar.set_postfix(lr=f"{lr:.1e}", loss=f"{value:.4f}", refresh=False)
            if not math.isfinite(trailing) or trailing > settings.diverge * best:
                result.stopped_early = step + 1 < settings.num_steps
                break
            best = min(best, trailing)
    finally:
        bar.close()
        batches.close()
