"""Optimizer and scheduler building, as pure functions of the model, the stage and the config's factories:
parameter groups (backbone/head × decay/no-decay), discriminative LRs, and the scheduler arguments a
stage fills in from its own length (OneCycleLR's `total_steps` and per-group `max_lr`, `T_max`)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from mlic.config.schema import Stage
from mlic.models.build import head_parameter_names
from mlic.utils.errors import ConfigError

# Scheduler arguments a stage fills in from its own length when the config leaves them out.
LENGTH_ARGS = ("total_steps", "T_max")


def _no_decay(name: str, p: torch.Tensor, skip: set[str]) -> bool:
    return p.ndim <= 1 or name.endswith(".bias") or name in skip


def parameter_groups(
    model: nn.Module, lr: float, backbone_lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Optimizer groups of the trainable parameters: backbone/head × decay/no-decay (norms, biases)."""
    head = head_parameter_names(model)
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    buckets: dict[tuple[str, bool], list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "head" if name in head else "backbone"
        buckets.setdefault((part, _no_decay(name, p, skip)), []).append(p)
    groups = []
    for (part, no_decay), params in sorted(buckets.items()):
        groups.append(
            {
                "params": params,
                "lr": lr if part == "head" else backbone_lr,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "name": f"{part}{'/no_decay' if no_decay else ''}",
            }
        )
    return groups


def build_optimizer(model: nn.Module, stage: Stage, factory: Callable) -> torch.optim.Optimizer:
    """A fresh optimizer over the trainable parameters, with the stage's (discriminative) LRs.

    The head's groups get the stage's `lr` (else the optimizer's own `lr`), the backbone's that times
    `backbone_lr_scale`; norms and biases get no weight decay.
    """
    # weight_decay=1.0 marks the groups that decay; the optimizer's own value replaces it below
    groups = parameter_groups(model, lr=1.0, backbone_lr=1.0, weight_decay=1.0)
    lr_scale = {g["name"]: (1.0 if g["name"].startswith("head") else stage.backbone_lr_scale) for g in groups}
    decays = {g["name"]: g["weight_decay"] for g in groups}
    for g in groups:
        del g["lr"], g["weight_decay"]
    optimizer = factory(groups)
    base_lr = stage.lr if isinstance(stage.lr, (int, float)) else optimizer.defaults["lr"]
    weight_decay = optimizer.defaults.get("weight_decay", 0.0)
    for g in optimizer.param_groups:
        g["lr"] = base_lr * lr_scale[g["name"]]
        if "weight_decay" in g:
            g["weight_decay"] = weight_decay if decays[g["name"]] else 0.0
    return optimizer


def build_scheduler(factory: Callable, optimizer: torch.optim.Optimizer, total_steps: int) -> tuple[Any, str]:
    """(scheduler, Lightning interval) for a stage of `total_steps` optimizer steps.

    Arguments the config's partial leaves out are filled in: `total_steps`/`T_max` with the stage's
    length, `max_lr` with each group's LR (so OneCycleLR keeps discriminative LRs). A scheduler whose
    length the stage filled in steps every batch; others step every epoch.
    """
    func = factory.func if isinstance(factory, partial) else factory
    given = set(factory.keywords) if isinstance(factory, partial) else set()
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        params = {}
    extra: dict[str, Any] = {}
    for name in LENGTH_ARGS:
        if name in params and name not in given:
            extra[name] = max(int(total_steps), 1)
    if "max_lr" in params and "max_lr" not in given:
        extra["max_lr"] = [g["lr"] for g in optimizer.param_groups]
    interval = "step" if any(k in extra for k in LENGTH_ARGS) else "epoch"
    if func is torch.optim.lr_scheduler.OneCycleLR:
        steps = int(extra.get("total_steps") or factory.keywords.get("total_steps") or 0)
        pct = float(factory.keywords.get("pct_start", 0.3)) if isinstance(factory, partial) else 0.3
        if steps and math.isclose(pct * steps, 1.0):  # OneCycleLR would divide by its zero-step warm-up
            raise ConfigError(
                f"field 'scheduler': OneCycleLR with pct_start={pct:g} cannot schedule a stage of {steps} "
                f"optimizer steps (its warm-up would end where it starts); train more batches "
                f"(epochs, data.num_iteration_on_epoch) or change pct_start"
            )
    return factory(optimizer, **extra), interval


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The learning rate of the head and of the backbone (absent when frozen), from group names."""
    out: dict[str, float] = {}
    for g in optimizer.param_groups:
        part = str(g.get("name", "head")).split("/")[0]
        out.setdefault(f"lr_{part}", float(g["lr"]))
    return out
