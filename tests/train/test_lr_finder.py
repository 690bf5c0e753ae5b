"""LR range test: the sweep restores everything, keeps discriminative LRs, cycles the loader, stops on
divergence, shows progress. The suggestion rules and the smoothing are tested in test_lr_rules.py, what
`--lr-find`, `config.lr_finder` and `Stage(lr="find")` leave in the experiment folder in
test_lr_find_runs.py."""

from __future__ import annotations

import copy
import logging
import random
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import tiny_config
from torch import nn

from mlic import LRFinder, Stage
from mlic.engine.lr_curve import describe, lowest_raw
from mlic.engine.module import ClassifierModule
from mlic.train.lr_finder import range_test
from mlic.train.range_tests import run_lr_find

# ------------------------------------------------------------------------------------------- helpers


def _module(stage: Stage | None = None, seed: int = 0) -> ClassifierModule:
    """A ClassifierModule on timm's test_resnet (BatchNorm included), 3 classes, AdamW as in the config."""
    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    module = ClassifierModule(
        model, nn.BCEWithLogitsLoss(), partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-2), None
    )
    module.set_stage(stage or Stage("full", epochs=1))
    return module


def _batches(
    n: int = 3, batch: int = 8, size: int = 32, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, 3, size, size, generator=g), (torch.rand(batch, 3, generator=g) < 0.4).float())
        for _ in range(n)
    ]


def _train_a_little(module: ClassifierModule, optimizer: torch.optim.Optimizer, steps: int = 2) -> None:
    """Real optimizer steps, so that the optimizer has state and BatchNorm statistics have moved."""
    module.train()
    for x, y in _batches(steps, seed=99):
        optimizer.zero_grad()
        module.loss_fn(module(x), y).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    """Deep equality of state dicts: tensors bit for bit, everything else with ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same(u, v, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _rng_states() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _read_curve(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, float_precision="round_trip")


# ------------------------------------------------------------------------ restore, bit for bit


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("fail_at", [None, 5], ids=["sweep_completes", "loss_raises_midway"])
def test_range_test_restores_weights_optimizer_and_rng_bit_for_bit(fail_at):
    module = _module()
    optimizer = module.build_optimizer()
    _train_a_little(module, optimizer)
    assert optimizer.state, "the optimizer should already have state"

    weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
    opt_state = copy.deepcopy(optimizer.state_dict())
    lrs_before = [g["lr"] for g in optimizer.param_groups]
    rng = _rng_states()
    calls = {"n": 0, "changed": False}
    bn_key = next(k for k in weights if k.endswith("running_mean"))
    fc_key = next(k for k in weights if k.endswith("fc.weight"))

    def loss_fn(logits, y):
        calls["n"] += 1
        # what dropout or augmentations would do: draw from every global generator
        torch.rand(1), np.random.rand(), random.random()
        if calls["n"] == 4:  # the sweep really changes the weights and BatchNorm statistics
            state = module.state_dict()
            calls["changed"] = not torch.equal(state[fc_key], weights[fc_key]) and not torch.equal(
                state[bn_key], weights[bn_key]
            )
        if calls["n"] == fail_at:
            raise Boom("loss failed")
        return nn.functional.binary_cross_entropy_with_logits(logits, y)

    settings = LRFinder(start_lr=1e-5, end_lr=1e-1, num_steps=20)
    if fail_at is None:
        result = range_test(module, optimizer, _batches(), loss_fn, settings)
        assert len(result.lrs) == 20
    else:
        with pytest.raises(Boom, match="loss failed"):
            range_test(module, optimizer, _batches(), loss_fn, settings)
        assert calls["n"] == fail_at
    assert calls["changed"]

    after = module.state_dict()
    assert after.keys() == weights.keys()
    for name, tensor in weights.items():  # parameters and BatchNorm buffers alike
        assert torch.equal(after[name], tensor), f"{name} not restored"
    _assert_same(optimizer.state_dict(), opt_state, "optimizer")
    assert [g["lr"] for g in optimizer.param_groups] == lrs_before

    assert torch.equal(torch.get_rng_state(), rng["torch"])
    _assert_same(np.random.get_state(), rng["numpy"], "numpy")
    assert random.getstate() == rng["python"]
    drawn = (torch.rand(3), np.random.rand(3), random.random())
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    assert torch.equal(drawn[0], torch.rand(3))
    assert np.array_equal(drawn[1], np.random.rand(3))
    assert drawn[2] == random.random()


def test_range_test_restores_train_eval_mode():
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    model.eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    range_test(model, optimizer, _batches(), nn.BCEWithLogitsLoss(), LRFinder(1e-5, 1e-2, num_steps=5))
    assert not any(m.training for m in model.modules())


# -------------------------------------------------------------------- discriminative LRs, schedule


def test_all_parameter_groups_are_scaled_by_one_factor_and_the_head_lr_is_log_spaced():
    module = _module(Stage("full", epochs=1, lr=1e-3, backbone_lr_scale=0.1))
    optimizer = module.build_optimizer()
    names = [g["name"] for g in optimizer.param_groups]
    assert {n.split("/")[0] for n in names} == {"head", "backbone"}
    seen: list[dict[str, float]] = []
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append({g["name"]: g["lr"] for g in opt.param_groups})
    )
    settings = LRFinder(start_lr=1e-6, end_lr=1e-2, num_steps=20)
    result = range_test(module, optimizer, _batches(), module.loss_fn, settings)

    assert not result.stopped_early
    assert len(seen) == len(result.lrs) == 20
    for step, lrs in enumerate(seen):
        head, backbone = lrs["head"], lrs["backbone"]
        assert lrs["head/no_decay"] == head and lrs["backbone/no_decay"] == backbone
        assert head / backbone == pytest.approx(10, rel=1e-12), step
        assert head == pytest.approx(result.lrs[step], rel=1e-12)
    head = np.array([lrs["head"] for lrs in seen])
    assert head[0] == pytest.approx(1e-6, rel=1e-12)
    assert head[-1] == pytest.approx(1e-2, rel=1e-12)
    np.testing.assert_allclose(head, np.geomspace(1e-6, 1e-2, 20), rtol=1e-12)
    np.testing.assert_allclose(np.diff(np.log(head)), np.log(1e4) / 19, rtol=1e-9)
    assert result.lrs[0] == 1e-6
    # and afterwards the stage's own LRs are back
    assert {g["name"]: g["lr"] for g in optimizer.param_groups}["head"] == 1e-3


def test_the_swept_lr_is_the_heads_even_when_the_backbone_lr_is_larger():
    module = _module(Stage("full", epochs=1, backbone_lr_scale=10.0))
    optimizer = module.build_optimizer()
    seen: list[float] = []
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append(next(g["lr"] for g in opt.param_groups if g["name"] == "head"))
    )
    result = range_test(module, optimizer, _batches(), module.loss_fn, LRFinder(1e-6, 1e-4, num_steps=6))
    np.testing.assert_allclose(seen, result.lrs, rtol=1e-12)


# ------------------------------------------------------------------------------- loader, divergence


def test_a_short_loader_is_cycled_for_the_full_number_of_steps():
    module = _module()
    optimizer = module.build_optimizer()
    loader = _batches(3)
    order: list[int] = []

    def loss_fn(logits, y):
        order.append(next(i for i, (_, t) in enumerate(loader) if torch.equal(t, y)))
        return nn.functional.binary_cross_entropy_with_logits(logits, y)

    result = range_test(module, optimizer, loader, loss_fn, LRFinder(1e-6, 1e-4, num_steps=12))
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) == 12
    assert not result.stopped_early
    assert order == [0, 1, 2] * 4


def test_an_empty_loader_is_an_error_not_an_endless_loop():
    module = _module()
    with pytest.raises(ValueError, match="no batches"):
        range_test(module, module.build_optimizer(), [], module.loss_fn, LRFinder(num_steps=10))


def test_divergence_stops_the_sweep_early():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(16, 4, generator=g) for _ in range(2)]
    loader = [(x, (x[:, :3] > 0).float()) for x in xs]  # learnable: the loss falls before it diverges
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = range_test(
        model, optimizer, loader, nn.BCEWithLogitsLoss(), LRFinder(start_lr=1e-3, end_lr=1e4, num_steps=30)
    )
    assert result.stopped_early
    assert 5 <= len(result.lrs) < 30
    last = result.smoothed[-1]
    assert not np.isfinite(last) or last > 4 * min(result.smoothed[:-1])
    assert result.suggestion is not None
    assert result.suggestion <= result.lrs[int(np.nanargmin(result.smoothed))]
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v)


def test_a_diverging_stage_test_says_where_it_stopped_without_a_warning(dataset, caplog):
    config = tiny_config(
        dataset,
        "diverge",
        stages=[Stage("full", epochs=1, lr=LRFinder(start_lr=1e-4, end_lr=1e6, num_steps=20))],
        optimizer=partial(torch.optim.SGD, lr=0.1),
    )
    with caplog.at_level(logging.INFO, logger="mlic"):
        exp_dir = run_lr_find(config).exp_dir
    stopped = [r for r in caplog.records if "stopped after" in r.getMessage()]
    assert len(stopped) == 1 and stopped[0].levelno == logging.INFO, caplog.text  # how a range test ends
    curve = _read_curve(exp_dir / "lr_finder.csv")
    assert len(curve) < 20
    assert f"stopped after {len(curve)} of 20 steps" in stopped[0].getMessage()
    assert "diverged early" in (exp_dir / "report.md").read_text()


def test_the_range_test_shows_progress_and_says_how_far_below_the_lowest_loss_it_suggests(
    capsys, monkeypatch
):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # as on a terminal; in a log it stays quiet
    module = _module()
    result = range_test(
        module,
        module.build_optimizer(),
        _batches(),
        module.loss_fn,
        LRFinder(start_lr=1e-5, end_lr=1e-1, num_steps=12),
        label="stage full",
    )
    assert "LR range test (stage full)" in capsys.readouterr().err
    assert result.suggestion is not None
    line = describe(result, "full")
    lowest = lowest_raw(result)
    assert f"the LR of the lowest raw loss ({lowest:.2e})" in line


def test_progress_false_prints_nothing(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    module = _module()
    settings = LRFinder(start_lr=1e-5, end_lr=1e-1, num_steps=8, progress=False)
    range_test(module, module.build_optimizer(), _batches(), module.loss_fn, settings)
    assert "LR range test" not in capsys.readouterr().err


def test_no_progress_bar_where_stderr_is_not_a_terminal(capsys):
    module = _module()
    settings = LRFinder(start_lr=1e-5, end_lr=1e-1, num_steps=8)
    range_test(module, module.build_optimizer(), _batches(), module.loss_fn, settings)
    assert capsys.readouterr().err == ""
