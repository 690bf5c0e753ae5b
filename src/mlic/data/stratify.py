"""Stratified sampling of multi-label rows (iterative stratification), for `mlic.split` and
`data.data_fraction`."""

from __future__ import annotations

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit


def stratified_take(
    targets: np.ndarray, indices: np.ndarray, fraction: float, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """Split `indices` into (kept, taken), `taken` about `fraction` of them, stratified on their labels."""
    y = np.asarray(targets[indices]) > 0.5
    if y.shape[1] == 1:
        y = np.hstack([y, ~y])  # the splitter needs at least two label columns
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=rng)
    kept, taken = next(splitter.split(np.zeros((len(indices), 1)), y))
    return indices[np.sort(kept)], indices[np.sort(taken)]


def stratified_folds(targets: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """The rows of each of `folds` folds (together every row once), stratified on the labels: each fold
    holds about 1/folds of every class's positives (the same folds for the same seed)."""
    y = np.asarray(targets) > 0.5
    if y.shape[1] == 1:
        y = np.hstack([y, ~y])
    splitter = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [np.sort(held) for _, held in splitter.split(np.zeros((len(y), 1)), y)]
