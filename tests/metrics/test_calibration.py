"""Calibration: the ECE against hand-checked numbers, and temperature/Platt scaling that recovers a known
miscalibration without reordering any class's images."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from mlic.metrics.calibration import (
    activate,
    expected_calibration_error,
    fit_calibration,
    logits_of,
    reliability,
)


def test_ece_of_a_hand_checked_example():
    # one image per bin: |0.1-0| + |0.4-1| + |0.8-1| + |0.9-1|, each a quarter of the images
    probs = np.array([[0.1], [0.4], [0.8], [0.9]])
    targets = np.array([[0], [1], [1], [1]])
    per_class, mean = expected_calibration_error(probs, targets, bins=10)
    assert per_class[0] == pytest.approx((0.1 + 0.6 + 0.2 + 0.1) / 4)
    # two images in one bin: |mean(0.81, 0.85) - mean(1, 0)| = 0.33
    per_class, mean = expected_calibration_error(np.array([[0.81], [0.85]]), np.array([[1], [0]]), bins=10)
    assert mean == pytest.approx(0.33)


def test_ece_of_a_single_label_model_reads_the_top_label():
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    targets = np.eye(3)[[0, 1, 1]]
    _, top = expected_calibration_error(probs, targets, softmax=True, bins=10)
    # bins: 0.7 right, 0.6 wrong, 0.5 right: |0.7-1| + |0.6-0| + |0.5-1|, a third each
    assert top == pytest.approx((0.3 + 0.6 + 0.5) / 3)


def overconfident(n: int = 20000, classes: int = 3, factor: float = 3.0, seed: int = 0):
    """Labels drawn from sigmoid(z); a model that says sigmoid(factor·z): sure beyond its evidence."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, classes))
    targets = (rng.random((n, classes)) < activate(z, softmax=False)).astype(float)
    return activate(factor * z, softmax=False), targets


def test_temperature_scaling_recovers_a_known_temperature_and_keeps_the_order():
    probs, targets = overconfident()
    calibration = fit_calibration(probs, targets, "temperature", softmax=False)
    assert calibration.scale == pytest.approx([1 / 3] * 3, rel=0.05)
    assert calibration.fitted.all()
    calibrated = calibration.apply(probs, softmax=False)
    before = expected_calibration_error(probs, targets)[1]
    after = expected_calibration_error(calibrated, targets)[1]
    assert after < before / 4
    for c in range(3):  # the order within a class stays: AP is the same
        assert average_precision_score(targets[:, c], calibrated[:, c]) == pytest.approx(
            average_precision_score(targets[:, c], probs[:, c])
        )


def test_platt_scaling_recovers_a_scale_and_a_shift():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, size=(20000, 1))
    targets = (rng.random(z.shape) < activate(z, softmax=False)).astype(float)
    probs = activate(2 * z + 1, softmax=False)  # z = (logit - 1) / 2
    calibration = fit_calibration(probs, targets, "platt", softmax=False)
    assert calibration.scale[0] == pytest.approx(0.5, rel=0.05)
    assert calibration.shift[0] == pytest.approx(-0.5, abs=0.05)


def test_a_class_with_few_positives_in_valid_takes_the_temperature_of_the_others():
    probs, targets = overconfident(n=2000)
    targets[:, 1] = 0
    targets[:3, 1] = 1  # three positives: too few to fit a temperature of its own
    calibration = fit_calibration(probs, targets, "temperature", softmax=False)
    assert list(calibration.fitted) == [True, False, True]
    assert calibration.scale[1] == pytest.approx(1 / 3, rel=0.1)  # the pooled fit of classes 0 and 2
    assert calibration.shift[1] == 0.0


def test_a_single_label_model_gets_one_temperature():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, size=(20000, 4))
    labels = np.array([rng.choice(4, p=p) for p in activate(z, softmax=True)])
    probs = activate(2 * z, softmax=True)
    calibration = fit_calibration(probs, np.eye(4)[labels], "temperature", softmax=True)
    assert calibration.scale == pytest.approx([0.5] * 4, rel=0.05)
    assert np.allclose(logits_of(calibration.apply(probs, True), True).argmax(1), probs.argmax(1))


def test_reliability_bars_count_every_pair():
    probs, targets = overconfident(n=1000)
    confidence, frequency, counts = reliability(probs, targets, bins=10)
    assert counts.sum() == probs.size
    filled = counts > 0
    assert ((confidence[filled] >= 0) & (confidence[filled] <= 1)).all()
    # overconfident: in the top bin the images are right less often than the model says
    assert frequency[-1] < confidence[-1]
