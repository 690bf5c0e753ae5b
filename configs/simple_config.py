"""One full-network stage from ImageNet weights: the simplest course config."""

from functools import partial

import torch

from configs.base import course_data
from mlic import Config, Model

config = Config(
    experiment_name="simple_config",
    data=course_data(num_iteration_on_epoch=None),
    model=Model(name="resnet34", pretrained=True),
    optimizer=partial(torch.optim.AdamW, lr=3e-4, weight_decay=1e-2),
    epochs=10,
)
