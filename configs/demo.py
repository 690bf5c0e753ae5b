"""The offline demo: range test → head → range test → full on posters made of real MNIST digits.

Run with `make demo`, or `ROOT_PATH=data/demo python train.py configs/demo.py`. The backbone starts from
the stand-in for ImageNet weights that `python -m mlic.demo` pretrains on scikit-learn's digits.
"""

import os
from functools import partial

import albumentations as A
import torch

from mlic import Config, Data, Model, Stage, env_path

ROOT_PATH = env_path("ROOT_PATH")
MODEL = "resnet10t"  # mlic.demo.build.DEMO_MODEL

config = Config(
    experiment_name="demo",
    data=Data(
        root=ROOT_PATH,
        img_size=(96, 64),
        batch_size=64,
        num_workers=2,
        augmentations=A.Compose(
            [
                # no flips: a mirrored digit is another glyph
                A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-8, 8), p=0.7),
                A.RandomBrightnessContrast(p=0.3),
            ]
        ),
    ),
    model=Model(name=MODEL, pretrained=os.path.join(ROOT_PATH, f"pretrained_{MODEL}.pth")),
    optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-2),
    # lr="find": an LR range test at the start of each stage picks its LR (see README)
    stages=[
        Stage("head", epochs=2, freeze_backbone=True, lr="find"),
        Stage("full", epochs=4, lr="find", backbone_lr_scale=0.3),
    ],
)
