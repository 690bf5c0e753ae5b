"""The whole chain in one call: head on a frozen backbone, then the full network."""

from functools import partial

import torch

from configs.base import ROOT_PATH, train_augmentations
from mlic import Config, Data, Model, Stage

config = Config(
    experiment_name="train_staged",
    data=Data(
        root=ROOT_PATH,
        batch_size=64,
        num_workers=4,
        num_iteration_on_epoch=100,
        augmentations=train_augmentations,
    ),
    model=Model(name="resnet34", pretrained=True),
    optimizer=partial(torch.optim.AdamW, lr=3e-4, weight_decay=1e-2),
    stages=[
        Stage("head", epochs=3, freeze_backbone=True, lr=3e-3),
        Stage("full", epochs=10, lr=3e-4, backbone_lr_scale=0.1),
    ],
    save_top_k=5,
)
