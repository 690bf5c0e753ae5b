"""The whole chain in one call: LR range test → head on a frozen backbone → range test → full network.

`lr="find"` runs an LR range test at the start of the stage and trains with its suggestion.
"""

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
        Stage("head", epochs=3, freeze_backbone=True, lr="find"),
        Stage("full", epochs=10, lr="find", backbone_lr_scale=0.1),
    ],
    save_top_k=5,
)
