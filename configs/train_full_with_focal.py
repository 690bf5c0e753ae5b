"""train_full with the binary focal loss: rare genres' hard examples weigh more than easy negatives."""

from dataclasses import replace

from configs.train_full import config as train_full
from mlic import losses

config = replace(
    train_full, experiment_name="train_full_with_focal", loss=losses.FocalLoss(alpha=0.25, gamma=2.0)
)
