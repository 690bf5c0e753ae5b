"""AugmentationSchedule: the probability of augmenting moves from start_p to end_p over a stage, in the
training process and in persistent loader workers, and each epoch's value is in metrics.csv."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import lightning as L
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

from mlic import Stage
from mlic.train.callbacks import AugmentationSchedule
from mlic.train.stages import run


def white(image: np.ndarray, **kwargs) -> np.ndarray:
    return np.full_like(image, 255)


class WhiteShare(L.Callback):
    """The share of white (augmented) images in each epoch's training batches."""

    def __init__(self) -> None:
        self.shares: list[list[float]] = []

    def on_train_epoch_start(self, trainer, module) -> None:
        self.shares.append([])

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        x = batch[0]
        flat = x.flatten(1)
        self.shares[-1].append(float(((flat.max(1).values - flat.min(1).values) < 1e-3).float().mean()))


def test_the_schedule_math():
    linear = AugmentationSchedule(1.0, 0.2)
    assert [linear.p_at(e, 5) for e in range(5)] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    fast = AugmentationSchedule(1.0, 0.2, exponent_factor=3.0)
    values = [fast.p_at(e, 5) for e in range(5)]
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.2)
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[1] < linear.p_at(1, 5)  # most of the change early
    with pytest.raises(ValueError, match="end_p must be a probability"):
        AugmentationSchedule(1.0, 1.5)


@pytest.mark.parametrize("workers", [0, 1])
def test_workers_augment_with_each_epochs_p_and_metrics_csv_records_it(dataset: Path, workers: int):
    share = WhiteShare()
    config = tiny_config(
        dataset,
        f"schedule{workers}",
        stages=[Stage("full", epochs=3)],
        callbacks=[AugmentationSchedule(start_p=1.0, end_p=0.0), share],
    )
    config.data.num_workers = workers  # 1: a persistent worker, which must still see each epoch's p
    config.data.augmentations = A.Compose([A.Lambda(name="white", image=white, p=1.0)])
    exp_dir = run(config).exp_dir
    rows = pd.read_csv(exp_dir / "metrics.csv")
    assert rows["aug_p"].tolist() == pytest.approx([1.0, 0.5, 0.0])
    means = [float(np.mean(s)) for s in share.shares]
    assert means[0] == 1.0 and means[2] == 0.0
    assert 0.2 < means[1] < 0.8


def test_a_plain_callable_pipeline_is_gated_too_and_other_stages_are_left_alone(dataset: Path):
    share = WhiteShare()
    stages = [Stage("head", epochs=1, freeze_backbone=True), Stage("full", epochs=2)]
    config = tiny_config(
        dataset, "callable", stages=stages, callbacks=[AugmentationSchedule(0.0, 0.0, stages=["full"]), share]
    )
    config.data.augmentations = lambda image: np.full_like(image, 255)
    rows = pd.read_csv(run(config).exp_dir / "metrics.csv")
    assert [float(np.mean(s)) for s in share.shares] == [1.0, 0.0, 0.0]  # head: the pipeline as given
    assert rows["aug_p"].isna().tolist() == [True, False, False]
