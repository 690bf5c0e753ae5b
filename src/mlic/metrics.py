"""Multi-label metrics on whole splits: mAP, ROC-AUC (macro), F1 micro/macro at a threshold; per-class
thresholds (tuned for F1, and read back from `thresholds.json`)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from mlic.errors import DataError


def class_priors(targets: np.ndarray) -> np.ndarray:
    """Each class's positive frequency, kept inside (0, 1): a class without positives (or negatives)
    counts half a positive (or negative), so its log-odds stay finite."""
    targets = np.asarray(targets, dtype=np.float64)
    n = max(len(targets), 1)
    return np.clip(targets.mean(axis=0), 0.5 / n, 1 - 0.5 / n)


def prior_logits(targets: np.ndarray, pos_weight: np.ndarray | None = None) -> np.ndarray:
    """The constant logits that minimise binary cross-entropy over `targets`: each class's log-odds,
    log(p / (1 - p)); with BCE's `pos_weight` w, log(w p / (1 - p))."""
    p = class_priors(targets)
    weight = 1.0 if pos_weight is None else np.asarray(pos_weight, dtype=np.float64)
    return np.log(weight * p / (1 - p))


def mean_average_precision(probs: np.ndarray, targets: np.ndarray) -> float:
    """Macro average precision over the classes that have at least one positive."""
    scores = [
        average_precision_score(targets[:, c], probs[:, c])
        for c in range(targets.shape[1])
        if targets[:, c].sum() > 0
    ]
    return float(np.mean(scores)) if scores else float("nan")


def macro_roc_auc(probs: np.ndarray, targets: np.ndarray) -> float:
    """Macro ROC-AUC over the classes that have both positives and negatives."""
    scores = [
        roc_auc_score(targets[:, c], probs[:, c])
        for c in range(targets.shape[1])
        if 0 < targets[:, c].sum() < len(targets)
    ]
    return float(np.mean(scores)) if scores else float("nan")


def multilabel_metrics(probs: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """All the per-epoch metrics of one split, keyed without the split prefix."""
    targets = np.asarray(targets).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    return {
        "map": mean_average_precision(probs, targets),
        "auc": macro_roc_auc(probs, targets),
        **f1_at(probs, targets, threshold),
    }


def f1_at(probs: np.ndarray, targets: np.ndarray, thresholds: float | np.ndarray) -> dict[str, float]:
    """F1 micro and macro with one threshold, or one per class (an array of length C)."""
    preds = (np.asarray(probs) >= np.asarray(thresholds, dtype=np.float64)).astype(int)
    targets = np.asarray(targets).astype(int)
    return {
        "f1_micro": float(f1_score(targets, preds, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(targets, preds, average="macro", zero_division=0)),
    }


def best_f1_threshold(probs: np.ndarray, targets: np.ndarray, default: float = 0.5) -> tuple[float, float]:
    """The threshold that maximises one class's F1 (predicting positive when prob >= threshold), and that F1.

    Every distinct probability is a candidate (F1 only changes there); the threshold returned is the
    midpoint between the chosen probability and the next lower one, so it does not sit on a sample.
    Among equal F1s the highest threshold wins (fewer false positives). A class without positives
    keeps `default`.
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets).astype(int)
    positives = int(targets.sum())
    if positives == 0:
        return default, float("nan")
    order = np.argsort(-probs, kind="stable")
    p, t = probs[order], targets[order]
    tp = np.cumsum(t)
    predicted = np.arange(1, len(p) + 1)
    # only the last index of each run of equal probabilities is a threshold one can actually set
    last_of_value = np.r_[p[1:] != p[:-1], True]
    f1 = np.where(last_of_value, 2 * tp / (predicted + positives), -1.0)
    best = int(np.argmax(f1))  # first maximum = highest threshold
    lower = p[best + 1] if best + 1 < len(p) else 0.0
    return float((p[best] + lower) / 2), float(f1[best])


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per-class thresholds that maximise each class's F1 on (usually) the valid split."""
    return np.array(
        [best_f1_threshold(probs[:, c], targets[:, c], default)[0] for c in range(targets.shape[1])]
    )


def per_class(
    probs: np.ndarray, targets: np.ndarray, thresholds: float | np.ndarray
) -> list[dict[str, float]]:
    """Support, average precision and F1 of every class at `thresholds`."""
    targets = np.asarray(targets).astype(int)
    preds = (np.asarray(probs) >= np.asarray(thresholds, dtype=np.float64)).astype(int)
    rows = []
    for c in range(targets.shape[1]):
        has_pos = targets[:, c].sum() > 0
        rows.append(
            {
                "support": int(targets[:, c].sum()),
                "ap": float(average_precision_score(targets[:, c], probs[:, c])) if has_pos else float("nan"),
                "f1": float(f1_score(targets[:, c], preds[:, c], zero_division=0)),
            }
        )
    return rows


def read_thresholds(
    exp_dir: Path, classes: Sequence[str], default: float | None
) -> tuple[np.ndarray | None, str]:
    """Per-class thresholds from the experiment's `thresholds.json`, else `default` for every class
    (None when `default` is None).

    Returns the thresholds in `classes` order and a sentence saying where they came from.
    """
    path = Path(exp_dir) / "thresholds.json"
    if not path.is_file():
        if default is None:
            return None, f"no {path}"
        return (
            np.full(len(classes), float(default)),
            f"threshold {default:g} for every class (the model file's; no {path})",
        )
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"thresholds file {path} is not valid JSON ({e}); delete it or fix it") from None
    if not isinstance(saved, dict):
        raise DataError(f'thresholds file {path} must map each class to a number, like {{"Drama": 0.41}}')
    missing = [c for c in classes if c not in saved]
    extra = [str(c) for c in saved if c not in classes]
    if missing or extra:
        parts = [f"lacks {', '.join(missing[:5])}"] if missing else []
        parts += [f"has {', '.join(extra[:5])}, which the model does not predict"] if extra else []
        raise DataError(
            f"thresholds file {path} does not match the model's classes: it {' and '.join(parts)}"
        )
    bad = [c for c in classes if not _is_number(saved[c])]
    if bad:
        raise DataError(
            f"thresholds file {path}: the threshold of {bad[0]!r} is {saved[bad[0]]!r}, not a number"
        )
    return np.array([float(saved[c]) for c in classes]), f"per-class thresholds from {path}"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
