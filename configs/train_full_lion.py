"""train_full with the stem and the first block frozen, and the Lion optimizer from timm.

Freezing the layers nearest the input keeps the pretrained edge and texture filters while the rest
adapts to posters (`Stage(freeze=0.25)` would freeze the first quarter of the backbone's layers instead).
Lion (Chen et al. 2023) takes an LR 3-10x below AdamW's and a weight decay as many times larger.
"""

from dataclasses import replace
from functools import partial

import timm.optim

from configs.train_full import config as train_full
from mlic import Stage

config = replace(
    train_full,
    experiment_name="train_full_lion",
    optimizer=partial(timm.optim.Lion, lr=5e-5, weight_decay=1e-1),
    stages=[Stage("full", epochs=10, backbone_lr_scale=0.1, freeze=["conv1", "bn1", "layer1.*"])],
)
