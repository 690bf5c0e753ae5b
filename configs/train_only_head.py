"""Course step 2: train the head on a frozen ImageNet backbone (BatchNorm statistics frozen too)."""

from functools import partial

import torch

from configs.base import course_data
from mlic import Config, Model, Stage

config = Config(
    experiment_name="train_only_head",
    data=course_data(),
    model=Model(name="resnet34", pretrained=True),
    optimizer=partial(torch.optim.AdamW, lr=3e-3, weight_decay=1e-2),
    stages=[Stage("head", epochs=5, freeze_backbone=True)],
)
