"""Course step 4: fine-tune the whole network, starting from train_only_head's best model."""

from functools import partial

import torch

from configs.base import course_data
from mlic import Config, Model, Stage

config = Config(
    experiment_name="train_full",
    data=course_data(),
    model=Model(name="resnet34", pretrained=False, checkpoint="experiments/train_only_head/model.best.pth"),
    optimizer=partial(torch.optim.AdamW, lr=3e-4, weight_decay=1e-2),
    # the pretrained backbone learns ten times slower than the head (discriminative learning rates)
    stages=[Stage("full", epochs=10, backbone_lr_scale=0.1)],
    save_top_k=5,
)
