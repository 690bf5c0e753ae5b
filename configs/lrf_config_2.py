"""Course step 3: LR range test for the whole network, from train_only_head's best model (no training).

The backbone's LR is a tenth of the head's, as in configs/train_full.py; the sweep scales both.
"""

from functools import partial

import torch

from configs.base import course_data
from mlic import Config, LRFinder, Model, Stage

config = Config(
    experiment_name="lrf_config_2",
    data=course_data(),
    model=Model(name="resnet34", pretrained=False, checkpoint="experiments/train_only_head/model.best.pth"),
    optimizer=partial(torch.optim.AdamW, weight_decay=1e-2),
    stages=[Stage("full", epochs=1, backbone_lr_scale=0.1)],
    lr_finder=LRFinder(start_lr=1e-7, end_lr=1.0, num_steps=100),
)
