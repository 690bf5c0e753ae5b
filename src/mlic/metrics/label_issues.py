"""Which given labels a model's out-of-sample probabilities disagree with: cleanlab's confident learning
(Northcutt et al., 2021), its multi-label form for a multi-label task (each class one-vs-rest).

`find_issues` returns, for every row, cleanlab's label-quality score (lower: more likely mislabelled),
the per-class scores, which (row, class) labels confident learning flags as wrong, and which the model
merely disagrees with (confident learning is stricter: it flags a label only where the model is more
sure of the other answer than it usually is of that class). The probabilities should come from
models that did not train on the rows (`mlic.train.audit`'s k-fold), or from one that has not fitted
its train labels: a model that has learned the wrong labels agrees with them (docs/audit.md).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from cleanlab import filter as single_filter
from cleanlab import rank as single_rank
from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class
from cleanlab.multilabel_classification.rank import (
    get_label_quality_scores,
    get_label_quality_scores_per_class,
)

from mlic.utils.errors import DataError


@dataclass
class Issues:
    """What confident learning found in one split."""

    row_score: np.ndarray  # (N,) label quality of each row, 0..1, lower is more likely wrong
    class_score: np.ndarray  # (N, C) label quality of each (row, class) label
    flagged: np.ndarray  # (N, C) booleans: the labels confident learning calls wrong
    disagree: np.ndarray  # (N, C) booleans: the labels the model disagrees with (multi-label: the
    # probability on the other side of 0.5; single-label: the given class is not the model's top one)

    def ranking(self) -> np.ndarray:
        """Every row, the most likely wrong first (by `row_score`)."""
        return np.argsort(self.row_score, kind="stable")


def find_issues(targets: np.ndarray, probs: np.ndarray, multi_label: bool = True) -> Issues:
    """Confident learning on `targets` (N×C 0/1 for multi-label, N×C one-hot for single-label) and
    out-of-sample `probs` (N×C)."""
    targets = np.asarray(targets)
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-6, 1 - 1e-6)
    if len(targets) < 2:
        raise DataError(f"the label audit needs at least 2 rows, got {len(targets)}")
    with warnings.catch_warnings():  # cleanlab warns about classes with few examples, once per class
        warnings.simplefilter("ignore")
        return _multi_label(targets, probs) if multi_label else _single_label(targets, probs)


def _multi_label(targets: np.ndarray, probs: np.ndarray) -> Issues:
    labels = [list(np.flatnonzero(row)) for row in targets]
    class_score = np.asarray(get_label_quality_scores_per_class(labels, probs), dtype=np.float64)
    return Issues(
        # a row is as wrong as its worst label (softmin over its classes): on the suite's planted noise
        # it found more of the flipped rows than cleanlab's default average (bench/audit.py)
        row_score=np.asarray(
            get_label_quality_scores(labels, probs, aggregator_kwargs={"method": "softmin"}),
            dtype=np.float64,
        ),
        class_score=class_score,  # self-confidence: the probability of the label given, 1 or 0
        # n_jobs=1: cleanlab's default forks a pool, which can hang a process whose torch threads run
        flagged=np.asarray(find_multilabel_issues_per_class(labels, probs, n_jobs=1), dtype=bool),
        disagree=class_score < 0.5,
    )


def _single_label(targets: np.ndarray, probs: np.ndarray) -> Issues:
    probs = probs / probs.sum(1, keepdims=True)
    labels = targets.argmax(1)
    row_score = np.asarray(single_rank.get_label_quality_scores(labels, probs), dtype=np.float64)
    flagged_rows = np.asarray(single_filter.find_label_issues(labels, probs, n_jobs=1), dtype=bool)
    given = np.eye(targets.shape[1], dtype=bool)[labels]  # the one label a row has
    class_score = np.where(given, row_score[:, None], np.nan)
    disagree = given & (probs.argmax(1) != labels)[:, None]
    return Issues(row_score, class_score, given & flagged_rows[:, None], disagree)
