"""A sweep over train_full's learning rates and weight decay: `python sweep.py configs/sweep_lr.py`.

Twelve trials of train_full, each its own experiment in experiments/sweep_lr_sweep/; trials whose valid
mAP falls below the median of the earlier trials' at the same epoch are stopped early.
"""

from dataclasses import replace

from configs.train_full import config as train_full
from mlic import Sweep, choice, loguniform

config = replace(
    train_full,
    experiment_name="sweep_lr",
    sweep=Sweep(
        n_trials=12,
        metric="valid/map",
        space={
            "optimizer.lr": loguniform(1e-5, 1e-3),
            "optimizer.weight_decay": loguniform(1e-4, 1e-1),
            "stages.full.backbone_lr_scale": choice([0.03, 0.1, 0.3]),
        },
    ),
)
