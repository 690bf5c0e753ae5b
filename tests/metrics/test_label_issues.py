"""Confident learning on probabilities (`mlic.metrics.label_issues`): planted label errors rank first,
and what it flags is planted."""

from __future__ import annotations

import numpy as np

from mlic.metrics.label_issues import find_issues


def planted(n: int, classes: int, flips: int, seed: int = 0):
    """True labels, probabilities of a good model of them, and the labels with `flips` rows flipped."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, classes)) < 0.3).astype(int)
    probs = np.clip(np.where(truth == 1, 0.85, 0.1) + rng.normal(0, 0.08, truth.shape), 0.01, 0.99)
    rows = rng.choice(n, flips, replace=False)
    cols = rng.integers(0, classes, flips)
    given = truth.copy()
    given[rows, cols] = 1 - given[rows, cols]
    return given, probs, rows, cols


def test_confident_learning_ranks_the_flipped_labels_first():
    given, probs, rows, cols = planted(400, 5, 12)
    issues = find_issues(given, probs, multi_label=True)
    assert set(issues.ranking()[:12]) == set(rows)
    planted_mask = np.zeros_like(given, dtype=bool)
    planted_mask[rows, cols] = True
    assert (issues.disagree == planted_mask).all()  # the model disagrees with the flipped labels alone
    # confident learning is stricter: it flags a flipped label only where the model is as sure of the
    # other answer as it usually is, and nothing that was not flipped
    assert not (issues.flagged & ~planted_mask).any()
    assert issues.flagged.sum() >= 6
    assert (issues.class_score[rows, cols] < 0.5).all()


def test_single_label_issues_name_the_given_class():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 300)
    probs = np.full((300, 3), 0.05) + 0.9 * np.eye(3)[truth] + rng.uniform(0, 0.02, (300, 3))
    given = truth.copy()
    given[:6] = (truth[:6] + 1) % 3
    issues = find_issues(np.eye(3)[given], probs, multi_label=False)
    assert set(issues.ranking()[:6]) == set(range(6))
    flagged_rows, flagged_classes = np.nonzero(issues.flagged)
    assert set(flagged_rows) == set(range(6))
    assert (flagged_classes == given[flagged_rows]).all()
