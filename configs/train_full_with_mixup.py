"""train_full with MixUp or CutMix on every batch (one of the two at random): images and genres mixed
with the same λ ~ Beta(0.4, 0.4). Mixing regularises; it tends to need more epochs than train_full's."""

from dataclasses import replace

from configs.train_full import config as train_full
from mlic import Mixing

config = replace(
    train_full, experiment_name="train_full_with_mixup", mixing=Mixing(strategy="both", p=1.0, alpha=0.4)
)
