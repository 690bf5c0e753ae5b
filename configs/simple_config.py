"""One full-network stage from ImageNet weights: the simplest course config."""

from functools import partial

import torch

from configs.base import ROOT_PATH, train_augmentations
from mlic import Config, Data, Model

config = Config(
    experiment_name="simple_config",
    data=Data(root=ROOT_PATH, batch_size=64, num_workers=4, augmentations=train_augmentations),
    model=Model(name="resnet34", pretrained=True),
    optimizer=partial(torch.optim.AdamW, lr=3e-4, weight_decay=1e-2),
    epochs=10,
)
