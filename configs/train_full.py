"""Course step 4: fine-tune the whole network, starting from train_only_head's best model."""

from functools import partial

import torch

from configs.base import ROOT_PATH, train_augmentations
from mlic import Config, Data, Model, Stage

config = Config(
    experiment_name="train_full",
    data=Data(
        root=ROOT_PATH,
        batch_size=64,
        num_workers=4,
        num_iteration_on_epoch=100,
        augmentations=train_augmentations,
    ),
    model=Model(name="resnet34", pretrained=False, checkpoint="experiments/train_only_head/model.best.pth"),
    optimizer=partial(torch.optim.AdamW, lr=3e-4, weight_decay=1e-2),
    # the pretrained backbone learns ten times slower than the head (discriminative learning rates)
    stages=[Stage("full", epochs=10, backbone_lr_scale=0.1)],
    save_top_k=5,
)
