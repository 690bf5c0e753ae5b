"""Multi-label metrics on whole splits: mAP, ROC-AUC (macro), F1 micro/macro at a threshold."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score


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
    preds = (probs >= threshold).astype(int)
    return {
        "map": mean_average_precision(probs, targets),
        "auc": macro_roc_auc(probs, targets),
        "f1_micro": float(f1_score(targets, preds, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(targets, preds, average="macro", zero_division=0)),
    }
