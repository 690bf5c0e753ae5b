"""LR range test: the sweep restores everything, keeps discriminative LRs, cycles the loader, stops on
divergence; suggestion rules on synthetic curves; what `--lr-find`, `config.lr_finder` and
`Stage(lr="find")` leave in the experiment folder."""

from __future__ import annotations

import copy
import logging
import random
import re
import sys
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import make_dataset, start_cli_cases, tiny_config
from torch import nn

from mlic import LRFinder, Stage
from mlic.lr_finder import (
    RangeTest,
    describe,
    lowest_raw,
    minimum,
    near_minimum,
    range_test,
    sensible_range,
    smooth,
    steepest,
    suggest,
    valley,
)
from mlic.module import ClassifierModule
from mlic.stages import run, run_lr_find

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
    loader = [
        (torch.randn(16, 4, generator=g), (torch.rand(16, 3, generator=g) < 0.5).float()) for _ in range(2)
    ]
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


def test_a_diverging_stage_test_warns_stopped_after(dataset, caplog):
    config = tiny_config(
        dataset,
        "diverge",
        stages=[Stage("full", epochs=1, lr=LRFinder(start_lr=1e-4, end_lr=1e6, num_steps=20))],
        optimizer=partial(torch.optim.SGD, lr=0.1),
    )
    with caplog.at_level(logging.INFO, logger="mlic"):
        exp_dir = run_lr_find(config).exp_dir
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "stopped after" in r.getMessage()
    ]
    assert len(warnings) == 1, caplog.text
    curve = _read_curve(exp_dir / "lr_finder.csv")
    assert len(curve) < 20
    assert f"stopped after {len(curve)} of 20 steps" in warnings[0].getMessage()
    assert "diverged early" in (exp_dir / "report.md").read_text()


# ------------------------------------------------------------------------ rules on synthetic curves

LRS = np.geomspace(1e-7, 10, 100)
_X = np.log10(LRS)
# flat at 1.0 up to 1e-4, falls smoothly (steepest at 1e-3) to 0.2 at 1e-2, then rises
CURVE = np.where(
    _X < -4,
    1.0,
    np.where(_X <= -2, 1.0 - 0.8 * (1 - np.cos(np.pi * (_X + 4) / 2)) / 2, 0.2 + 0.5 * (_X + 2) ** 2),
)
LR_AT_MIN = LRS[int(np.argmin(CURVE))]


def test_the_synthetic_curve_is_what_the_tests_assume():
    assert 5e-3 < LR_AT_MIN < 2e-2
    assert CURVE[0] == CURVE[30] == 1.0


@pytest.mark.parametrize(
    "rule", [valley, steepest, minimum, near_minimum], ids=["valley", "steepest", "minimum", "near_minimum"]
)
def test_every_rule_falls_inside_the_falling_stretch_below_the_minimum(rule):
    lr = rule(LRS, CURVE)
    assert lr is not None
    assert 1e-4 <= lr <= 1e-2
    assert lr < LR_AT_MIN


def test_steepest_finds_where_the_loss_falls_fastest():
    assert steepest(LRS, CURVE) == pytest.approx(1e-3, rel=0.25)


def test_minimum_is_a_tenth_of_the_lr_at_the_lowest_loss():
    assert minimum(LRS, CURVE) == LR_AT_MIN / 10


def test_near_minimum_is_two_thirds_of_the_lr_at_the_lowest_loss():
    assert near_minimum(LRS, CURVE) == LR_AT_MIN / 1.5


def test_the_default_rule_is_near_minimum_for_suggest_and_the_range_test():
    assert LRFinder().suggestion == RangeTest().rule == "near_minimum"
    assert suggest(LRS, CURVE) == near_minimum(LRS, CURVE) == LR_AT_MIN / 1.5


# ------------------------------------------------------- smoothing that does not lag the sweep

# A range test recorded on a real data set (bench/data_emoji.py, resnet10t from scratch, AdamW, batch 64,
# a head without prior initialisation): the raw loss falls from log 2 to its lowest near 2e-2 and the
# sweep diverges at about 2. A trailing average with beta=0.98 (the previous smoothing) lags by decades.
LAGGING = pd.read_csv(Path(__file__).parent / "fixtures" / "range_test_lagging.csv")


def _trailing_average(losses: np.ndarray, beta: float = 0.98) -> np.ndarray:
    """The bias-corrected exponential moving average fastai and Lightning smooth with."""
    out, avg = [], 0.0
    for i, value in enumerate(losses):
        avg = beta * avg + (1 - beta) * value
        out.append(avg / (1 - beta ** (i + 1)))
    return np.array(out)


def test_the_recorded_curve_lags_under_a_trailing_average():
    lrs, raw = LAGGING["lr"].to_numpy(), LAGGING["loss"].to_numpy()
    lowest_raw = lrs[10 + int(np.argmin(raw[10:]))]
    lagging = _trailing_average(raw)
    assert lrs[10 + int(np.argmin(lagging[10:]))] > 30 * lowest_raw
    assert minimum(lrs, lagging) > lowest_raw  # what the old default suggested: past the lowest loss


@pytest.mark.parametrize("rule", ["near_minimum", "valley", "steepest", "minimum"])
def test_on_a_recorded_curve_the_suggestion_sits_where_the_raw_loss_still_falls(rule):
    lrs, raw = LAGGING["lr"].to_numpy(), LAGGING["loss"].to_numpy()
    smoothed = smooth(lrs, raw, LRFinder().window)
    lr = suggest(lrs, smoothed, rule)
    i = int(np.argmin(np.abs(np.log(lrs) - np.log(lr))))  # the sweep's step nearest the suggestion
    lowest_raw = lrs[10 + int(np.argmin(raw[10:]))]
    assert lr < lowest_raw  # not past the lowest raw loss
    # inside the fall: the loss has left its starting plateau (more than half of the fall is done) ...
    start, bottom = raw[:10].mean(), raw.min()
    assert raw[i - 2 : i + 3].mean() < start - 0.5 * (start - bottom)
    # ... and it still goes lower at higher LRs before the sweep diverges
    assert raw[i + 1 :].min() < raw[i - 2 : i + 3].mean()
    assert smoothed[i + 1 :].min() < smoothed[i]


def test_centred_smoothing_keeps_the_lowest_point_where_it_is():
    # a V in log LR with noise: the smoothed minimum stays at the true one; a trailing average moves it
    x = np.log10(LRS)
    rng = np.random.default_rng(0)
    truth = 1 + np.abs(x + 3)
    losses = truth + rng.normal(0, 0.05, len(x))
    lr_true = LRS[int(np.argmin(np.abs(x + 3)))]
    smoothed = smooth(LRS, losses, 0.5)
    assert abs(np.log10(LRS[int(np.argmin(smoothed))] / lr_true)) <= 0.25  # within a quarter decade
    assert LRS[int(np.argmin(_trailing_average(losses)))] > 10 * lr_true
    assert np.std((smoothed - truth)[5:-5]) < 0.75 * np.std(losses - truth)  # it does smooth


def test_centred_smoothing_of_a_straight_line_is_the_line():
    line = 2.0 - 0.1 * np.log10(LRS)
    assert np.allclose(smooth(LRS, line, 0.5), line)


def test_smoothing_window_zero_is_the_raw_curve():
    losses = CURVE + np.random.default_rng(1).normal(0, 0.05, len(CURVE))
    assert np.array_equal(smooth(LRS, losses, 0.0), losses)


def test_smoothing_stops_at_the_first_non_finite_loss():
    losses = CURVE.copy()
    losses[60] = np.nan
    losses[61:] = 100.0
    out = smooth(LRS, losses, 0.5)
    assert np.isnan(out[60]) and np.isfinite(out[:60]).all()
    assert np.allclose(out[:60], smooth(LRS[:60], CURVE[:60], 0.5))


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


@pytest.mark.parametrize(
    "suggestion, words",
    [(1e-3, "10.0x below"), (1e-2, "at"), (2e-2, "2.0x above")],
    ids=["below", "at", "above"],
)
def test_the_log_line_says_where_the_suggestion_sits_against_the_lowest_raw_loss(suggestion, words):
    lrs = list(np.geomspace(1e-5, 1e-1, 41))
    losses = list(1 + (np.log10(lrs) + 2) ** 2)  # lowest at 1e-2
    result = RangeTest(lrs=lrs, losses=losses, smoothed=losses, suggestion=suggestion, rule="near_minimum")
    assert describe(result, "full").endswith(f"{words} the LR of the lowest raw loss (1.00e-02)")


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


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("cut", [45, 70], ids=["cut_in_the_fall", "cut_after_the_minimum"])
@pytest.mark.parametrize("rule", ["valley", "steepest", "minimum"])
def test_a_non_finite_loss_gives_the_suggestion_of_the_curve_cut_there(rule, cut, bad):
    broken = CURVE.copy()
    broken[cut] = bad
    broken[cut + 3 :] = 0.01  # after a NaN nothing counts, not even lower losses
    assert suggest(LRS, broken, rule) == suggest(LRS[:cut], CURVE[:cut], rule)
    assert sensible_range(LRS, broken) == sensible_range(LRS[:cut], CURVE[:cut])


@pytest.mark.parametrize("n", [0, 1, 4])
def test_too_short_a_curve_has_no_suggestion(n):
    lrs, losses = LRS[40 : 40 + n], CURVE[40 : 40 + n]
    assert valley(lrs, losses) is None
    assert steepest(lrs, losses) is None
    assert suggest(lrs, losses) is None
    assert sensible_range(lrs, losses) is None


def test_a_curve_that_is_finite_for_fewer_than_five_points_has_no_suggestion():
    broken = CURVE.copy()
    broken[4] = np.nan
    assert suggest(LRS, broken) is None
    assert valley(LRS, broken) is None


@pytest.mark.parametrize("n", [2, 4])
def test_too_short_a_curve_has_no_minimum_suggestion(n):
    assert suggest(LRS[40 : 40 + n], CURVE[40 : 40 + n], "minimum") is None


def test_suggest_is_capped_at_the_lr_of_the_lowest_loss():
    # one deep dip, then a long slow decline at a higher level: fastai's valley lands after the dip
    losses = np.concatenate([np.full(6, 1.0), [0.1], np.linspace(0.95, 0.5, 40)])
    lrs = np.geomspace(1e-6, 1.0, len(losses))
    assert valley(lrs, losses) > lrs[6]
    assert suggest(lrs, losses, "valley") == lrs[6]


def test_a_low_first_point_does_not_pull_the_suggestion_to_start_lr():
    # the first smoothed points are single raw losses; one of them being lowest must not win
    losses = np.concatenate([[0.2], CURVE[1:]])
    assert suggest(LRS, losses, "valley") == pytest.approx(suggest(LRS, CURVE, "valley"))
    assert suggest(LRS, losses, "valley") > LRS[5]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("rule", ["valley", "steepest", "minimum"])
def test_suggest_never_exceeds_the_lr_of_the_lowest_loss(rule, seed):
    rng = np.random.default_rng(seed)
    losses = CURVE + rng.normal(0, 0.05, len(CURVE))
    lr = suggest(LRS, losses, rule)
    assert lr is not None and lr <= LRS[int(np.argmin(losses))]


@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_sensible_range_brackets_the_default_suggestion_below_the_minimum(seed):
    losses = CURVE if seed is None else CURVE + np.random.default_rng(seed).normal(0, 0.02, len(CURVE))
    low, high = sensible_range(LRS, losses)
    assert low < suggest(LRS, losses) < high <= LRS[int(np.argmin(losses))]
    if seed is None:
        assert (low, high) == (LR_AT_MIN / 10, LR_AT_MIN)


# ----------------------------------------------------------------------- --lr-find on the command line

CONFIG_TEXT = """from mlic import Config, Data, LRFinder, Model, Stage

config = Config(
    experiment_name="{name}",
    data=Data(root="data", img_size=(32, 32), batch_size=8, num_workers=0),
    model=Model(name="test_resnet", pretrained=False),
    stages={stages},
    trainer=dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False),
)
"""
TWO_STAGES = (
    '[Stage("head", epochs=1, freeze_backbone=True, lr=LRFinder(num_steps=20)), '
    'Stage("full", epochs=1, lr=LRFinder(num_steps=20))]'
)


def _cli_case(name: str, stages: str):
    def setup(folder: Path) -> list[str]:
        make_dataset(folder / "data", n_train=24, n_valid=8, n_test=8)
        (folder / f"{name}.py").write_text(CONFIG_TEXT.format(name=name, stages=stages))
        return [f"{name}.py", "--lr-find"]

    return setup


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    yield from start_cli_cases({"lrf_two": _cli_case("lrf_two", TWO_STAGES)}, tmp_path_factory)


def test_lr_find_cli_writes_a_curve_per_stage_a_report_and_nothing_else(cli):
    """A one-stage config writes `lr_finder.csv` instead: see the `find_then_numeric` runs below."""
    case, suffixes = "lrf_two", ["_head", "_full"]
    folder, result = cli(case)
    assert result.returncode == 0, result.stderr
    exp_dir = folder / "experiments" / case
    assert sorted(p.name for p in exp_dir.glob("lr_finder*.csv")) == sorted(
        f"lr_finder{s}.csv" for s in suffixes
    )
    report = (exp_dir / "report.md").read_text()
    for suffix in suffixes:
        curve = _read_curve(exp_dir / f"lr_finder{suffix}.csv")
        assert list(curve.columns) == ["step", "lr", "loss", "smoothed_loss"]
        assert 5 <= len(curve) <= 20
        assert curve["step"].tolist() == list(range(1, len(curve) + 1))
        assert (np.diff(curve["lr"]) > 0).all()
        assert curve["lr"].iloc[0] == pytest.approx(LRFinder().start_lr)
        assert (exp_dir / f"lr_finder{suffix}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        lr = suggest(curve["lr"], curve["smoothed_loss"])
        assert lr is not None
        assert f"{lr:.2e}" in report
        assert f"lr_finder{suffix}.png" in report
        stage = suffix.lstrip("_") or "full"
        line = re.search(
            rf"LR range test, stage {stage}: (\d+) steps in \d+\.\d s.*; suggested LR (\S+)", result.stdout
        )
        assert line, result.stdout
        assert int(line.group(1)) == len(curve) and line.group(2) == f"{lr:.2e}"
    assert not (exp_dir / "checkpoints").exists()
    assert not list(exp_dir.rglob("*.pth")) and not list(exp_dir.rglob("*.ckpt"))
    assert not (exp_dir / "metrics.csv").exists()


# ------------------------------------------------------------------------ config.lr_finder, lr="find"


def test_config_lr_finder_runs_only_the_range_test(dataset):
    config = tiny_config(dataset, "only_test", lr_finder=LRFinder(num_steps=10))
    exp_dir = run(config).exp_dir
    assert sorted(p.name for p in exp_dir.glob("lr_finder*")) == [
        "lr_finder_full.csv",
        "lr_finder_full.png",
        "lr_finder_head.csv",
        "lr_finder_head.png",
    ]
    for stage in ("head", "full"):
        assert len(_read_curve(exp_dir / f"lr_finder_{stage}.csv")) <= 10
    assert not (exp_dir / "metrics.csv").exists()
    assert not (exp_dir / "checkpoints").exists()
    assert not list(exp_dir.rglob("*.pth"))
    assert "LR range test" in (exp_dir / "report.md").read_text()


class _FirstBatch(L.Callback):
    """The weights at fit start, and the weights, batch and LRs at the first training batch."""

    def __init__(self) -> None:
        self.at_fit_start: dict[str, torch.Tensor] = {}
        self.first: dict[str, Any] = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        self.at_fit_start = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.first:
            self.first = {
                "weights": {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()},
                "x": batch[0].detach().clone(),
                "lrs": {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups},
            }


@pytest.fixture(scope="module")
def find_then_numeric(tmp_path_factory):
    """The same config twice: the stage's lr from a range test, then that number given directly."""
    base = tmp_path_factory.mktemp("find")
    dataset = make_dataset(base / "data", n_train=24, n_valid=8, n_test=8)

    def config(name: str, lr, recorder: _FirstBatch):
        c = tiny_config(
            dataset,
            name,
            stages=[Stage("full", epochs=1, lr=lr, backbone_lr_scale=0.1)],
            scheduler=None,
            callbacks=[recorder],
        )
        c.output_dir = str(base / "experiments")
        return c

    found, numeric = _FirstBatch(), _FirstBatch()
    find_dir = run(config("find", LRFinder(num_steps=20), found)).exp_dir
    assert [p.name for p in find_dir.glob("lr_finder*.csv")] == ["lr_finder.csv"]  # one stage tested
    curve = _read_curve(find_dir / "lr_finder.csv")
    lr = suggest(curve["lr"], curve["smoothed_loss"])
    numeric_dir = run(config("numeric", lr, numeric)).exp_dir
    return {"find": (find_dir, found), "numeric": (numeric_dir, numeric), "lr": lr}


def test_stage_lr_find_trains_with_the_suggestion(find_then_numeric):
    exp_dir, _ = find_then_numeric["find"]
    lr = find_then_numeric["lr"]
    row = pd.read_csv(exp_dir / "metrics.csv", float_precision="round_trip").iloc[0]
    assert row["lr_head"] == pytest.approx(lr, rel=1e-12)
    assert row["lr_backbone"] == pytest.approx(lr * 0.1, rel=1e-12)
    assert f"{lr:.2e}" in (exp_dir / "report.md").read_text()
    assert (exp_dir / "model.best.pth").exists()


def test_the_range_test_leaves_the_stage_starting_weights_and_first_batch_unchanged(find_then_numeric):
    _, found = find_then_numeric["find"]
    _, numeric = find_then_numeric["numeric"]
    assert found.at_fit_start.keys() == numeric.at_fit_start.keys()
    for name, tensor in numeric.at_fit_start.items():
        assert torch.equal(found.at_fit_start[name], tensor), name
    for name, tensor in numeric.first["weights"].items():
        assert torch.equal(found.first["weights"][name], tensor), name
    assert torch.equal(found.first["x"], numeric.first["x"])  # same shuffle: the RNG was restored
    assert found.first["lrs"] == numeric.first["lrs"]


def test_training_after_a_range_test_is_bit_identical_to_training_without_one(find_then_numeric):
    find_dir, _ = find_then_numeric["find"]
    numeric_dir, _ = find_then_numeric["numeric"]
    a = torch.load(find_dir / "model.last.pth", weights_only=True)["state_dict"]
    b = torch.load(numeric_dir / "model.last.pth", weights_only=True)["state_dict"]
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name
    columns = ["epoch", "step", "lr_head", "lr_backbone", "train/loss", "valid/loss", "valid/map"]
    metrics = [pd.read_csv(d / "metrics.csv")[columns] for d in (find_dir, numeric_dir)]
    pd.testing.assert_frame_equal(*metrics)


# ---------------------------------------------------------------------------------------------- GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_lr_find_runs_on_the_gpu(dataset):
    config = tiny_config(dataset, "gpu", stages=[Stage("full", epochs=1, lr=LRFinder(num_steps=10))])
    config.trainer["accelerator"] = "auto"
    exp_dir = run_lr_find(config).exp_dir
    assert len(_read_curve(exp_dir / "lr_finder.csv")) > 0
