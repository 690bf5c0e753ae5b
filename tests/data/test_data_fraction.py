"""Data(data_fraction=...): quick runs on a stratified share of the train table."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_dataset, tiny_config

from mlic import ConfigError, Stage
from mlic.config.validation import validate
from mlic.data.tables import read_splits
from mlic.train.stages import run


def test_a_fraction_keeps_that_share_of_train_with_its_label_frequencies(tmp_path: Path):
    root = make_dataset(tmp_path / "big", n_train=400, n_valid=40, n_test=40)
    cfg = tiny_config(root).data
    full = read_splits(cfg)
    part = read_splits(replace(cfg, data_fraction=0.25), seed=3)
    assert 90 <= len(part["train"]) <= 110  # about a quarter of 400
    assert set(part["train"].ids) < set(full["train"].ids)
    assert len(part["valid"]) == len(full["valid"]) and len(part["test"]) == len(full["test"])
    # stratified: every class keeps a quarter of its positives, give or take one
    expected = full["train"].targets.sum(0) * 0.25
    assert np.abs(part["train"].targets.sum(0) - expected).max() <= 1.0
    again = read_splits(replace(cfg, data_fraction=0.25), seed=3)
    other = read_splits(replace(cfg, data_fraction=0.25), seed=4)
    assert list(again["train"].ids) == list(part["train"].ids)
    assert list(other["train"].ids) != list(part["train"].ids)


def test_a_run_on_half_the_train_table_takes_half_the_steps(dataset: Path):
    config = tiny_config(dataset, "half", stages=[Stage("full", epochs=2)])
    config.data.data_fraction = 0.5  # 24 of the 48 rows: 3 batches of 8 an epoch instead of 6
    steps = pd.read_csv(run(config).exp_dir / "metrics.csv")["step"].tolist()
    assert steps == [3, 6]


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1])
def test_a_fraction_outside_zero_to_one_is_one_sentence(dataset: Path, fraction: float):
    config = tiny_config(dataset)
    config.data.data_fraction = fraction
    with pytest.raises(ConfigError, match=r"field 'data\.data_fraction' must be above 0 and at most 1"):
        validate(config)
