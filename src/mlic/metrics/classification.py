"""Multi-label metrics on whole splits (pure numpy and scikit-learn): mAP, ROC-AUC (macro), F1 micro/macro
at a threshold, per-class thresholds tuned for F1, class priors."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

# The metric columns of every split, in the order tables show them (metrics.csv, report.md, the CLIs);
# `loss` comes from the config's loss, the others from `multilabel_metrics`.
COLUMNS = ("loss", "map", "auc", "f1_micro", "f1_macro")
# F1 with the per-class thresholds tuned on valid (`thresholds.json`), added after training
TUNED = ("f1_micro_tuned", "f1_macro_tuned")


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


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the `k` highest probabilities."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def confusion(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class), rows true."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix
