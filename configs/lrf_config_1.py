"""Course step 1: LR range test for the head on a frozen ImageNet backbone (no training).

Read the curve in notebooks/lrf.ipynb or experiments/lrf_config_1/lr_finder.png, then set the head's
LR in configs/train_only_head.py.
"""

from functools import partial

import torch

from configs.base import course_data
from mlic import Config, LRFinder, Model, Stage

config = Config(
    experiment_name="lrf_config_1",
    data=course_data(),
    model=Model(name="resnet34", pretrained=True),
    optimizer=partial(torch.optim.AdamW, weight_decay=1e-2),
    stages=[Stage("head", epochs=1, freeze_backbone=True)],
    lr_finder=LRFinder(start_lr=1e-6, end_lr=1.0, num_steps=100),
)
