"""Optimizer and scheduler building (mlic.engine.optim): weight-decay groups, discriminative LRs, and the
scheduler arguments a stage fills in (OneCycleLR's per-group max_lr and total_steps, T_max)."""

from __future__ import annotations

from functools import partial

import pytest
import timm
import torch

from mlic import Stage
from mlic.engine.optim import build_optimizer, build_scheduler, current_lrs, parameter_groups
from mlic.models.build import frozen_parameter_names, set_frozen


def _model(name: str = "test_resnet") -> torch.nn.Module:
    return timm.create_model(name, pretrained=False, num_classes=3)


def test_norm_and_bias_parameters_get_no_weight_decay():
    model = _model("test_convnext")
    groups = parameter_groups(model, lr=1e-3, backbone_lr=1e-4, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        for p in group["params"]:
            is_weight = p.ndim > 1 and not names[id(p)].endswith(".bias")
            assert group["weight_decay"] == (0.05 if is_weight else 0.0), names[id(p)]
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == {"backbone": 1e-4, "backbone/no_decay": 1e-4, "head": 1e-3, "head/no_decay": 1e-3}


def test_frozen_backbone_leaves_only_head_parameters_in_the_optimizer_groups():
    model = _model("test_resnet")
    set_frozen(model, frozen_parameter_names(model, True, None, "stages.head.freeze"))
    groups = parameter_groups(model, lr=1e-3, backbone_lr=1e-3, weight_decay=0.0)
    assert {g["name"].split("/")[0] for g in groups} == {"head"}


def test_the_stage_lr_goes_to_the_head_and_its_scaled_share_to_the_backbone():
    model = _model()
    adamw = partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05)
    optimizer = build_optimizer(model, Stage("full", epochs=1, lr=2e-3, backbone_lr_scale=0.1), adamw)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == pytest.approx(
        {"backbone": 2e-4, "backbone/no_decay": 2e-4, "head": 2e-3, "head/no_decay": 2e-3}
    )
    decays = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decays == {"backbone": 0.05, "backbone/no_decay": 0.0, "head": 0.05, "head/no_decay": 0.0}
    assert current_lrs(optimizer) == pytest.approx({"lr_backbone": 2e-4, "lr_head": 2e-3})


def test_without_a_stage_lr_the_optimizer_keeps_its_own_and_a_frozen_backbone_has_no_groups():
    model = _model()
    set_frozen(model, frozen_parameter_names(model, True, None, "stages.head.freeze"))
    optimizer = build_optimizer(
        model, Stage("head", epochs=1, freeze_backbone=True), partial(torch.optim.SGD, lr=0.05)
    )
    assert {g["name"] for g in optimizer.param_groups} == {"head", "head/no_decay"}
    assert all(g["lr"] == 0.05 for g in optimizer.param_groups)
    assert current_lrs(optimizer) == {"lr_head": 0.05}


def test_one_cycle_gets_each_groups_lr_as_its_max_lr_and_the_stage_length():
    optimizer = build_optimizer(
        _model(), Stage("full", epochs=1, lr=1e-2, backbone_lr_scale=0.3), partial(torch.optim.AdamW, lr=1e-3)
    )
    scheduler, interval = build_scheduler(
        partial(torch.optim.lr_scheduler.OneCycleLR, pct_start=0.25), optimizer, total_steps=40
    )
    assert interval == "step" and scheduler.total_steps == 40
    max_lrs = {g["name"]: g["max_lr"] for g in optimizer.param_groups}
    assert max_lrs == pytest.approx(
        {"backbone": 3e-3, "backbone/no_decay": 3e-3, "head": 1e-2, "head/no_decay": 1e-2}
    )
    # the cycle starts at max_lr / div_factor (25) in every group, and peaks at each group's own max_lr
    assert optimizer.param_groups[0]["lr"] == pytest.approx(max_lrs[optimizer.param_groups[0]["name"]] / 25)
    for _ in range(9):  # OneCycleLR peaks after pct_start * total_steps - 1 steps
        optimizer.step()
        scheduler.step()
    peak = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert peak == pytest.approx(max_lrs, rel=1e-6)


def test_what_the_config_sets_is_kept_and_other_schedulers_step_per_epoch():
    optimizer = build_optimizer(
        _model(), Stage("full", epochs=1, lr=1e-2), partial(torch.optim.AdamW, lr=1e-3)
    )
    given = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=5e-2, total_steps=7)
    scheduler, interval = build_scheduler(given, optimizer, total_steps=40)
    assert scheduler.total_steps == 7 and all(g["max_lr"] == 5e-2 for g in optimizer.param_groups)
    assert interval == "epoch"  # the config chose the length, so it chose what one step means
    cosine, interval = build_scheduler(torch.optim.lr_scheduler.CosineAnnealingLR, optimizer, total_steps=40)
    assert cosine.T_max == 40 and interval == "step"
    step, interval = build_scheduler(partial(torch.optim.lr_scheduler.StepLR, step_size=2), optimizer, 40)
    assert interval == "epoch"


def test_one_cycle_on_too_short_a_stage_is_one_sentence_not_a_division_by_zero():
    from mlic import ConfigError

    optimizer = build_optimizer(_model(), Stage("full", epochs=1), partial(torch.optim.AdamW, lr=1e-3))
    with pytest.raises(
        ConfigError, match="OneCycleLR with pct_start=0.25 cannot schedule a stage of 4 optimizer steps"
    ):
        build_scheduler(
            partial(torch.optim.lr_scheduler.OneCycleLR, pct_start=0.25), optimizer, total_steps=4
        )
    build_scheduler(partial(torch.optim.lr_scheduler.OneCycleLR, pct_start=0.25), optimizer, total_steps=8)
