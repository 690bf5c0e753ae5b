"""The whole chain in one call: head on a frozen backbone, then the full network."""

from functools import partial

import torch

from configs.base import course_data
from mlic import Config, Model, Stage

config = Config(
    experiment_name="train_staged",
    data=course_data(),
    model=Model(name="resnet34", pretrained=True),
    optimizer=partial(torch.optim.AdamW, lr=3e-4, weight_decay=1e-2),
    stages=[
        Stage("head", epochs=3, freeze_backbone=True, lr=3e-3),
        Stage("full", epochs=10, lr=3e-4, backbone_lr_scale=0.1),
    ],
    save_top_k=5,
)
