"""The range test's pure parts: suggestion rules on synthetic and recorded curves, the centred smoothing
that does not lag the sweep, the log line, and curves cut short or non-finite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlic import LRFinder
from mlic.engine.lr_curve import (
    SIGNAL_RATIO,
    RangeTest,
    describe,
    minimum,
    near_minimum,
    sensible_range,
    signal,
    smooth,
    steepest,
    suggest,
    valley,
)

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
LAGGING = pd.read_csv(Path(__file__).parents[1] / "fixtures" / "range_test_lagging.csv")


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


# ------------------------------------------------------------------- a curve that shows nothing

# A range test recorded on a real data set where 100 steps do not move the loss (`bench/recipe.py
# --flat`: Pokémon sprites by type, resnet18 from random weights at 96×96, prior-initialised head,
# AdamW, batch 64): the loss wanders around the prior loss (0.26-0.30) until the sweep diverges past
# 1e-1, and the centred smoothing's lowest point sits in the noise, where `near_minimum` read 5.7e-3.
FLAT = pd.read_csv(Path(__file__).parents[1] / "fixtures" / "lr_range_flat.csv")


def test_a_recorded_flat_curve_has_no_clear_fall():
    lrs, raw = FLAT["lr"].to_numpy(), FLAT["loss"].to_numpy()
    sig = signal(lrs, raw, smooth(lrs, raw, LRFinder().window))
    assert sig is not None and not sig.clear
    assert sig.drop < SIGNAL_RATIO * sig.noise


def test_a_recorded_curve_that_falls_is_clear():
    lrs, raw = LAGGING["lr"].to_numpy(), LAGGING["loss"].to_numpy()
    sig = signal(lrs, raw, smooth(lrs, raw, LRFinder().window))
    assert sig.clear
    assert sig.start == pytest.approx(0.694, abs=0.005)  # log 2: a head without prior initialisation


def test_noise_alone_is_not_a_fall():
    rng = np.random.default_rng(0)
    for _ in range(20):
        raw = 0.28 + 0.01 * rng.standard_normal(len(LRS))  # flat and noisy, as from random weights
        assert not signal(LRS, raw, smooth(LRS, raw)).clear


def test_a_fall_of_a_few_noise_levels_is_clear():
    rng = np.random.default_rng(0)
    raw = CURVE * 0.1 + 0.01 * rng.standard_normal(len(LRS))  # falls by 0.08 against a noise of 0.01
    assert signal(LRS, raw, smooth(LRS, raw)).clear


def test_the_log_line_of_a_flat_curve_gives_the_numbers_and_no_suggestion():
    lrs, raw = list(FLAT["lr"]), list(FLAT["loss"])
    smoothed = list(smooth(lrs, raw))
    sig = signal(lrs, raw, smoothed)
    line = describe(RangeTest(lrs=lrs, losses=raw, smoothed=smoothed, signal=sig), "full")
    assert "suggested LR none: the loss did not fall by more than its noise" in line
    assert f"a drop of {sig.drop:.4f} against a noise of {sig.noise:.4f}" in line


# --------------------------------------------------------------------------- the edge of the bottom


def test_edge_reads_the_high_end_of_a_broad_flat_bottom():
    x = np.log10(LRS)
    # falls to 0.30 by 1e-3, stays within 0.002 of it up to 3e-2, then rises steeply
    curve = np.where(
        x < -3, 0.30 + 0.1 * (-3 - x), np.where(x < np.log10(3e-2), 0.30, 0.30 + (x - np.log10(3e-2)))
    )
    curve = curve + 0.002 * np.sin(np.arange(len(LRS)))  # ripples in the bottom move its lowest point
    lr = suggest(LRS, curve, "edge", noise=0.01)
    assert 2e-2 <= lr <= 4e-2
    assert lr > 5 * suggest(LRS, curve, "near_minimum")


def test_edge_without_noise_is_the_lr_of_the_lowest_loss():
    lowest = LRS[10 + int(np.argmin(CURVE[10:]))]
    assert suggest(LRS, CURVE, "edge") == pytest.approx(lowest)


def test_edge_on_a_recorded_curve_sits_between_the_lowest_point_and_the_divergence():
    lrs, raw = LAGGING["lr"].to_numpy(), LAGGING["loss"].to_numpy()
    smoothed = smooth(lrs, raw)
    lr = suggest(lrs, smoothed, "edge", noise=signal(lrs, raw, smoothed).noise)
    low = 10 + int(np.argmin(raw[10:]))
    diverged = lrs[low + int(np.argmax(raw[low:] > 2 * raw[low]))]  # past the lowest, twice its loss
    assert suggest(lrs, smoothed, "near_minimum") * 1.5 <= lr * 1.0001
    assert lr < diverged / 10
