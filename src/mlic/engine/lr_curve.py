"""An LR range test's curve and what is read from it: the record (`RangeTest`), the smoothing, the signal
check, the suggestion rules (pure functions) and the log lines. The sweep that records a curve is
`mlic.train.lr_finder.range_test`; its settings are `mlic.config.schema.LRFinder`; its plot is written by
`mlic.evaluate.report.save_lr_curve`."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlic.config.schema import LRFinder

log = logging.getLogger("mlic")


# the rule LRFinder() uses
DEFAULT_RULE = LRFinder.suggestion


@dataclass
class RangeTest:
    """What a range test recorded: one entry per optimizer step, and its suggestion."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggestion: float | None = None
    stopped_early: bool = False
    seconds: float = 0.0
    rule: str = DEFAULT_RULE
    signal: Signal | None = None  # did the loss fall by more than its noise? (None: curve too short)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "step": range(1, len(self.lrs) + 1),
                "lr": self.lrs,
                "loss": self.losses,
                "smoothed_loss": self.smoothed,
            }
        )


# ------------------------------------------------------------------------------------ suggestion rules


def _finite_prefix(lrs: Iterable[float], losses: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """The curve up to (not including) its first non-finite loss."""
    lrs, losses = np.asarray(list(lrs), dtype=float), np.asarray(list(losses), dtype=float)
    bad = np.flatnonzero(~np.isfinite(losses))
    end = int(bad[0]) if len(bad) else len(losses)
    return lrs[:end], losses[:end]


MIN_POINTS = 5


def _lowest(losses: np.ndarray) -> int:
    """Index of the lowest loss, ignoring the first tenth of the curve (a few raw, noisy points)."""
    skip = max(1, len(losses) // 10)
    return skip + int(np.argmin(losses[skip:]))


def valley(lrs: Iterable[float], losses: Iterable[float]) -> float | None:
    """fastai's 'valley': about halfway down the longest stretch of falling loss."""
    lrs, losses = _finite_prefix(lrs, losses)
    n = len(losses)
    if n < 5:
        return None
    start, end = _longest_valley(losses)
    sections = (end - start) / 3
    return float(lrs[start + int(sections) + int(sections / 2)])


def _longest_valley(losses: np.ndarray) -> tuple[int, int]:
    """Start and end index of the longest decreasing subsequence of the losses (fastai)."""
    n = len(losses)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[max_end] < lds[i]:
            max_end = i
            max_start = max_end - lds[max_end]
    return max(max_start, 0), max_end


def steepest(
    lrs: Iterable[float], losses: Iterable[float], skip_begin: int = 10, skip_end: int = 1
) -> float | None:
    """The LR where the loss falls fastest against log(LR) (Lightning's rule)."""
    lrs, losses = _finite_prefix(lrs, losses)
    lrs, losses = lrs[skip_begin : len(lrs) - skip_end], losses[skip_begin : len(losses) - skip_end]
    if len(losses) < 3:
        return None
    return float(lrs[int(np.argmin(np.gradient(losses, np.log10(lrs))))])


def minimum(lrs: Iterable[float], losses: Iterable[float]) -> float | None:
    """A tenth of the LR at the lowest loss (the classic rule of thumb)."""
    lrs, losses = _finite_prefix(lrs, losses)
    if len(losses) < MIN_POINTS:
        return None
    return float(lrs[_lowest(losses)] / 10)


def near_minimum(lrs: Iterable[float], losses: Iterable[float]) -> float | None:
    """Two thirds of the LR at the lowest loss: the peak of a one-cycle schedule does best just below
    the point where more LR stops helping (measured on the real-data suite, bench/RESULTS.md)."""
    lrs, losses = _finite_prefix(lrs, losses)
    if len(losses) < MIN_POINTS:
        return None
    return float(lrs[_lowest(losses)] / 1.5)


# how far above its lowest point the smoothed loss may sit, in noise levels, and still be the flat bottom
EDGE_NOISE = 2.0


def edge(lrs: Iterable[float], losses: Iterable[float], noise: float = 0.0) -> float | None:
    """The high end of the curve's flat bottom: the largest LR at or past the lowest loss before the loss
    rises more than `EDGE_NOISE` times `noise` (the raw losses' spread, `Signal.noise`) above the lowest.
    Where the bottom is broad, the lowest point sits anywhere in it by the noise; a one-cycle peak does
    best near its high end (bench/RESULTS.md). With no noise given, the LR of the lowest loss."""
    lrs, losses = _finite_prefix(lrs, losses)
    if len(losses) < MIN_POINTS:
        return None
    low = _lowest(losses)
    limit = losses[low] + EDGE_NOISE * noise
    end = low
    while end + 1 < len(losses) and losses[end + 1] <= limit:
        end += 1
    return float(lrs[end])


RULE_TEXT = {
    "edge": "the high end of the flat bottom: the largest LR past the lowest loss still within two noise levels of it",
    "near_minimum": "two thirds of the LR at the lowest loss",
    "valley": "fastai's: about halfway down the longest stretch of falling loss",
    "steepest": "where the loss falls fastest against log LR",
    "minimum": "a tenth of the LR at the lowest loss",
}

RULES: dict[str, Callable[[Iterable[float], Iterable[float]], float | None]] = {
    "valley": valley,
    "steepest": steepest,
    "minimum": minimum,
    "near_minimum": near_minimum,
    "edge": edge,
}


def suggest(
    lrs: Iterable[float], losses: Iterable[float], rule: str = DEFAULT_RULE, noise: float = 0.0
) -> float | None:
    """The suggested LR of a curve by `rule`, never above the LR at the lowest loss (but for `edge`,
    which reads past it by design).

    None when fewer than `MIN_POINTS` finite points are left: too short a curve to read.
    """
    lrs, losses = _finite_prefix(lrs, losses)
    if len(losses) < MIN_POINTS:
        return None
    if rule == "edge":  # reads past the lowest point by design, as far as the curve's noise allows
        return edge(lrs, losses, noise)
    lr = RULES[rule](lrs, losses)
    if lr is None:
        return None
    return float(min(lr, lrs[_lowest(losses)]))


def sensible_range(lrs: Iterable[float], losses: Iterable[float]) -> tuple[float, float] | None:
    """LRs to pick from: from a tenth of the LR of the lowest loss up to it, around the default suggestion."""
    lrs, losses = _finite_prefix(lrs, losses)
    if len(losses) < MIN_POINTS:
        return None
    lowest = float(lrs[_lowest(losses)])
    return lowest / 10, lowest


# ------------------------------------------------------------------------------------------ the signal

# a curve says something when its smoothed loss falls below its start by this many noise levels
SIGNAL_RATIO = 3.0


@dataclass(frozen=True)
class Signal:
    """Whether a range test's loss fell by more than its noise before any rule reads the curve.

    `start` is the mean raw loss over the first window of the sweep (where no LR moves the weights
    much), `lowest` the smoothed loss at its lowest point, `noise` the standard deviation of the raw
    losses around the smoothed curve up to that point. The fall is clear when `start - lowest` is at
    least `SIGNAL_RATIO` times `noise`.
    """

    start: float
    lowest: float
    noise: float

    @property
    def drop(self) -> float:
        return self.start - self.lowest

    @property
    def ratio(self) -> float:
        if self.noise > 0:
            return self.drop / self.noise
        return math.inf if self.drop > 0 else 0.0  # a noiseless curve: any fall is clear

    @property
    def clear(self) -> bool:
        return self.ratio >= SIGNAL_RATIO


def signal(
    lrs: Iterable[float], losses: Iterable[float], smoothed: Iterable[float], window: float = 0.5
) -> Signal | None:
    """The fall of the loss against its noise (see `Signal`); None when the curve is too short to read."""
    lrs, raw = _finite_prefix(lrs, losses)
    smooth_ = np.asarray(list(smoothed), dtype=float)[: len(raw)]
    if len(raw) < MIN_POINTS:
        return None
    low = _lowest(smooth_)
    logs = np.log10(lrs)
    first = max(MIN_POINTS, int(np.searchsorted(logs, logs[0] + window, side="right")))
    residuals = (raw - smooth_)[: max(low + 1, first)]
    return Signal(
        start=float(raw[:first].mean()), lowest=float(smooth_[low]), noise=float(residuals.std(ddof=1))
    )


# ------------------------------------------------------------------------------------------ smoothing


def smooth(lrs: Iterable[float], losses: Iterable[float], window: float = 0.5) -> np.ndarray:
    """The loss averaged over a window `window` decades of LR wide, centred on each point (no lag).

    A trailing exponential average lags an exponential sweep by a fixed number of steps, which is
    several decades of LR when the sweep is short (fastai's and Lightning's beta=0.98 lags by about 50
    steps); a centred window lags by nothing, and its width is set in decades, not steps. Near the ends
    the window shrinks symmetrically (the first and last points stay raw). Non-finite losses stay
    non-finite and end the finite part: nothing after the first one is averaged.
    """
    lrs, values = np.asarray(list(lrs), dtype=float), np.asarray(list(losses), dtype=float)
    out = np.full(len(values), np.nan)
    x, y = _finite_prefix(lrs, values)
    n = len(y)
    if n == 0:
        return values.copy()
    logs = np.log10(x)
    half = window / 2
    for i in range(n):
        lo = int(np.searchsorted(logs, logs[i] - half - 1e-12, side="left"))
        hi = int(np.searchsorted(logs, logs[i] + half + 1e-12, side="right")) - 1
        k = min(i - lo, hi - i)  # as many points on each side: the window stays centred
        out[i] = y[i - k : i + k + 1].mean()
    out[n:] = values[n:]
    return out


def points_per_window(settings: LRFinder) -> float:
    decades = math.log10(settings.end_lr / settings.start_lr)
    return settings.window * (settings.num_steps - 1) / decades


# -------------------------------------------------------------------------------------------- output


def lowest_raw(result: RangeTest) -> float | None:
    """The LR at the lowest raw (unsmoothed) loss of the curve's finite part, past its first tenth."""
    lrs, losses = _finite_prefix(result.lrs, result.losses)
    if len(losses) < MIN_POINTS:
        return None
    return float(lrs[_lowest(losses)])


def describe(result: RangeTest, stage: str) -> str:
    """One line for the log: what the range test did, how long it took, what it suggests and how far
    below the lowest raw loss that sits."""
    early = " (stopped early: the loss diverged)" if result.stopped_early else ""
    line = f"LR range test, stage {stage}: {len(result.lrs)} steps in {result.seconds:.1f} s{early}; "
    if result.suggestion is None and result.signal is not None and not result.signal.clear:
        return line + "suggested LR none: " + describe_flat(result.signal)
    if result.suggestion is None:
        return line + "suggested LR none (curve too short)"
    line += f"suggested LR {result.suggestion:.2e} ({result.rule})"
    lowest = lowest_raw(result)
    if lowest is not None:
        factor = lowest / result.suggestion
        where = (
            f"{factor:.1f}x below"
            if factor >= 1.05
            else ("at" if factor > 0.95 else f"{1 / factor:.1f}x above")
        )
        line += f", {where} the LR of the lowest raw loss ({lowest:.2e})"
    return line


def describe_flat(sig: Signal) -> str:
    """Why a curve gives no suggestion: its fall against its noise, in numbers."""
    return (
        f"the loss did not fall by more than its noise (from {sig.start:.4f} at the start to "
        f"{sig.lowest:.4f} smoothed at its lowest, a drop of {sig.drop:.4f} against a noise of "
        f"{sig.noise:.4f}; a clear fall is at least {SIGNAL_RATIO:g}x the noise)"
    )


FLAT_ADVICE = (
    "the test gets a signal from more steps (LRFinder(num_steps=300)), a narrower span "
    "(LRFinder(start_lr=1e-5, end_lr=1.0)) or a pretrained start (Model(pretrained=...))"
)


def above_lowest_raw(result: RangeTest) -> float | None:
    """How many times the suggestion sits above the LR of the lowest raw loss (None when it does not)."""
    lowest = lowest_raw(result)
    if result.suggestion is None or lowest is None or result.suggestion <= lowest * 1.05:
        return None
    return result.suggestion / lowest
