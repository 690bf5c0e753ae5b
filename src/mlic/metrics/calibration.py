"""Calibrated probabilities: the expected calibration error (ECE), and temperature or Platt scaling fitted
on valid so that a predicted 0.8 is right about 80% of the time.

Both scalings map each class's logit z to `scale · z + shift` (temperature scaling: scale 1/T, shift 0;
Platt scaling: both fitted), which keeps the order of the images within a class: per-class AP and AUC
do not change, and a threshold tuned on calibrated probabilities picks the same images as one tuned on
the raw ones. A multi-label model gets a temperature (or a Platt pair) per class, fitted where valid
has at least `MIN_POSITIVES` positives and as many negatives; the rarer classes share the temperature
fitted on the others' pooled logits (per class, a handful of positives pushes the fit to an extreme).
Temperatures stay between 0.1 and 10. A single-label model gets one temperature for all its classes
(its softmax couples them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit

EPS = 1e-12  # float32 probabilities reach 1 - 6e-8: a wider clip would tie distinct ones
BINS = 15
METHODS = ("temperature", "platt")
LOG_T_RANGE = (-np.log(10.0), np.log(10.0))  # temperatures from 0.1 to 10: beyond them the fit is noise
MIN_POSITIVES = (
    10  # a class with fewer positives (or negatives) in valid takes the temperature of all classes
)


def logits_of(probs: np.ndarray, softmax: bool) -> np.ndarray:
    """Logits that give `probs` back (log-probabilities for a softmax, log-odds for sigmoids)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) if softmax else np.log(p / (1 - p))


def activate(logits: np.ndarray, softmax: bool) -> np.ndarray:
    if softmax:
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    return expit(logits)


def _bin_gaps(confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """Σ over equal-width bins of |bin| / N · |mean confidence − mean correctness|."""
    if len(confidence) == 0:
        return float("nan")
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(total)


def expected_calibration_error(
    probs: np.ndarray, targets: np.ndarray, softmax: bool = False, bins: int = BINS
) -> tuple[np.ndarray, float]:
    """ECE per class (each class's probabilities against its 0/1 targets, over `bins` equal-width bins)
    and the summary: their mean for a multi-label model; for a single-label model the top-label ECE
    (the confidence of the predicted class against whether it is right)."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    per_class = np.array([_bin_gaps(probs[:, c], targets[:, c], bins) for c in range(probs.shape[1])])
    if softmax:
        top = probs.argmax(1)
        right = (targets[np.arange(len(top)), top] > 0.5).astype(float)
        return per_class, _bin_gaps(probs.max(1), right, bins)
    return per_class, float(np.nanmean(per_class)) if len(per_class) else float("nan")


def reliability(
    probs: np.ndarray, targets: np.ndarray, softmax: bool = False, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reliability diagram's bars: for each of `bins` equal-width confidence bins, the mean confidence,
    the observed frequency and the count (every class's (probability, target) pairs pooled, or the
    top label's for a single-label model)."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if softmax:
        top = probs.argmax(1)
        confidence, correct = probs.max(1), targets[np.arange(len(top)), top]
    else:
        confidence, correct = probs.ravel(), targets.ravel()
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, confidence, minlength=bins) / counts
        frequency = np.bincount(index, correct, minlength=bins) / counts
    return mean_conf, frequency, counts


def _nll(z: np.ndarray, y: np.ndarray, softmax: bool) -> float:
    if softmax:
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-(y * log_p).sum(1).mean())
    # binary cross-entropy from logits, numerically stable
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def _temperature(z: np.ndarray, y: np.ndarray, softmax: bool) -> float:
    """The scale 1/T minimising the NLL of `z`/T, searched over log T in LOG_T_RANGE."""
    fit = minimize_scalar(
        lambda log_t: _nll(z / np.exp(log_t), y, softmax), bounds=LOG_T_RANGE, method="bounded"
    )
    return float(np.exp(-fit.x))


def _platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising the NLL of a·z + b; a kept positive (the order of the images stays)."""
    fit = minimize(lambda ab: _nll(np.exp(ab[0]) * z + ab[1], y, False), x0=np.zeros(2), method="L-BFGS-B")
    log_a = float(np.clip(fit.x[0], -LOG_T_RANGE[1], -LOG_T_RANGE[0]))
    return float(np.exp(log_a)), float(fit.x[1])


@dataclass
class Calibration:
    """Per-class `scale` and `shift` of the logits (what calibration.json holds)."""

    method: str
    scale: np.ndarray
    shift: np.ndarray
    fitted: np.ndarray  # False: too few positives (or negatives) in valid: the temperature of the others

    def apply(self, probs: np.ndarray, softmax: bool) -> np.ndarray:
        """Calibrated probabilities from raw ones."""
        return activate(logits_of(probs, softmax) * self.scale + self.shift, softmax)


def fit_calibration(probs: np.ndarray, targets: np.ndarray, method: str, softmax: bool) -> Calibration:
    """Fit `method` ("temperature" or "platt") on valid's probabilities and targets."""
    z, y = logits_of(probs, softmax), np.asarray(targets, dtype=np.float64)
    classes = z.shape[1]
    scale, shift, fitted = np.ones(classes), np.zeros(classes), np.zeros(classes, dtype=bool)
    if softmax:  # one temperature: the softmax couples the classes
        scale[:] = _temperature(z, y, softmax=True)
        fitted[:] = True
        return Calibration("temperature", scale, shift, fitted)
    sides = np.minimum(y.sum(0), len(y) - y.sum(0))  # a class's positives or negatives, the fewer
    enough = sides >= MIN_POSITIVES
    if enough.any():  # the rare classes share one temperature, fitted on the classes that have evidence
        scale[~enough] = _temperature(z[:, enough].ravel(), y[:, enough].ravel(), softmax=False)
    for c in np.flatnonzero(enough):
        if method == "platt":
            scale[c], shift[c] = _platt(z[:, c], y[:, c])
        else:
            scale[c] = _temperature(z[:, c], y[:, c], softmax=False)
    fitted[:] = enough
    return Calibration(method, scale, shift, fitted)


__all__ = [
    "METHODS",
    "Calibration",
    "activate",
    "expected_calibration_error",
    "fit_calibration",
    "logits_of",
    "reliability",
]
