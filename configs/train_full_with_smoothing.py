"""train_full with label smoothing: targets pulled toward 0.5, against over-confident genre labels."""

from dataclasses import replace

from configs.train_full import config as train_full
from mlic import losses

config = replace(
    train_full, experiment_name="train_full_with_smoothing", loss=losses.LabelSmoothingBCE(smoothing=0.1)
)
