"""Metrics and per-class thresholds against scikit-learn and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from mlic.metrics.classification import (
    best_f1_threshold,
    f1_at,
    multilabel_metrics,
    per_class,
    tune_thresholds,
)


def _random(seed: int, n: int = 60, c: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < [0.5, 0.3, 0.15, 0.05][:c]).astype(int)
    targets[0] = 1  # every class has a positive
    probs = np.clip(0.35 * targets + rng.random((n, c)) * 0.65, 0, 1)
    return probs, targets


def test_tuned_thresholds_find_the_known_best_threshold():
    # class 0: separable, any threshold in (0.6, 0.7] gives F1 = 1
    # class 1: keeping all three positives (threshold in (0.1, 0.3]) beats keeping only 0.55 (F1 6/7 vs 1/2)
    probs = np.array([[0.9, 0.55], [0.8, 0.35], [0.7, 0.3], [0.6, 0.5], [0.2, 0.1], [0.1, 0.05]])
    targets = np.array([[1, 1], [1, 1], [1, 1], [0, 0], [0, 0], [0, 0]])
    t0, t1 = tune_thresholds(probs, targets)
    assert 0.6 < t0 <= 0.7
    assert 0.1 < t1 <= 0.3
    assert f1_score(targets[:, 0], probs[:, 0] >= t0) == 1.0
    assert f1_score(targets[:, 1], probs[:, 1] >= t1) == pytest.approx(6 / 7)


def test_best_threshold_matches_a_brute_force_search():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(3, 40))
        probs = np.round(rng.random(n), 2)  # ties included
        targets = (rng.random(n) < 0.3).astype(int)
        if targets.sum() == 0:
            continue
        threshold, f1 = best_f1_threshold(probs, targets)
        brute = max(f1_score(targets, probs >= t, zero_division=0) for t in np.r_[np.unique(probs), 1.01])
        assert f1 == pytest.approx(brute, abs=1e-12)
        assert f1_score(targets, probs >= threshold, zero_division=0) == pytest.approx(brute, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_tuned_f1_on_valid_is_never_below_the_global_threshold(seed, threshold):
    probs, targets = _random(seed)
    tuned = tune_thresholds(probs, targets, threshold)
    at_tuned = per_class(probs, targets, tuned)
    at_global = per_class(probs, targets, threshold)
    assert all(a["f1"] >= g["f1"] - 1e-12 for a, g in zip(at_tuned, at_global))
    assert f1_at(probs, targets, tuned)["f1_macro"] >= f1_at(probs, targets, threshold)["f1_macro"] - 1e-12


def test_a_class_without_positives_keeps_the_global_threshold():
    probs, targets = _random(0)
    targets[:, 2] = 0
    assert tune_thresholds(probs, targets, 0.42)[2] == 0.42


def test_map_and_f1_agree_with_scikit_learn():
    probs, targets = _random(3, n=200)
    ours = multilabel_metrics(probs, targets, 0.4)
    assert abs(ours["map"] - average_precision_score(targets, probs, average="macro")) < 1e-6
    preds = (probs >= 0.4).astype(int)
    assert abs(ours["f1_micro"] - f1_score(targets, preds, average="micro")) < 1e-6
    assert abs(ours["f1_macro"] - f1_score(targets, preds, average="macro")) < 1e-6
    rows = per_class(probs, targets, 0.4)
    for c, row in enumerate(rows):
        assert abs(row["ap"] - average_precision_score(targets[:, c], probs[:, c])) < 1e-6
        assert row["support"] == targets[:, c].sum()


def test_map_skips_classes_without_positives_as_documented():
    probs, targets = _random(4)
    targets[:, 3] = 0
    expected = np.mean([average_precision_score(targets[:, c], probs[:, c]) for c in range(3)])
    assert multilabel_metrics(probs, targets)["map"] == pytest.approx(expected, abs=1e-12)


def test_saved_thresholds_keep_a_saturated_class_separable(tmp_path):
    import json

    from mlic import Config, Data
    from mlic.evaluate.evaluation import apply_thresholds

    probs = np.array([[0.99999994], [0.9999999], [0.3]], dtype=np.float32).astype(np.float64)
    targets = np.array([[1], [0], [0]])
    config = Config(experiment_name="x", data=Data(root="."))
    results = {"valid": {}}
    apply_thresholds(tmp_path, config, ["A"], {"valid": (probs, targets)}, results)
    saved = json.loads((tmp_path / "thresholds.json").read_text())["A"]
    assert f1_at(probs, targets, np.array([saved]))["f1_macro"] == 1.0
    assert results["valid"]["f1_macro_tuned"] == 1.0
