"""Stratified sampling of multi-label rows (iterative stratification), for `mlic.split` and
`data.data_fraction`."""

from __future__ import annotations

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit


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
