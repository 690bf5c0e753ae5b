"""Course step 2: train the head on a frozen ImageNet backbone (BatchNorm statistics frozen too)."""

from functools import partial

import torch

from configs.base import ROOT_PATH, train_augmentations
from mlic import Config, Data, Model, Stage

config = Config(
    experiment_name="train_only_head",
    data=Data(
        root=ROOT_PATH,
        batch_size=64,
        num_workers=4,
        num_iteration_on_epoch=100,
        augmentations=train_augmentations,
    ),
    model=Model(name="resnet34", pretrained=True),
    optimizer=partial(torch.optim.AdamW, lr=3e-3, weight_decay=1e-2),
    stages=[Stage("head", epochs=5, freeze_backbone=True)],
)
