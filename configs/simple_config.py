"""The measured recipe: one full-network stage from ImageNet weights at its range test's LR, BCE, flips.

On three real data sets this matched a hand-written PyTorch loop, and nothing added to it (a head stage,
stronger augmentation, other losses, EMA, SWA) paid at the same budget: docs/recipe.md has the numbers.
"""

from functools import partial

import albumentations as A
import torch

from configs.base import course_data
from mlic import Config, Model, Stage

config = Config(
    experiment_name="simple_config",
    data=course_data(num_iteration_on_epoch=None, augmentations=A.HorizontalFlip(p=0.5)),
    model=Model(name="resnet34", pretrained=True),
    optimizer=partial(torch.optim.AdamW, lr=3e-4, weight_decay=1e-2),
    stages=[Stage("full", epochs=10, lr="find")],  # the LR range test picks the stage's LR
)
