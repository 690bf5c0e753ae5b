"""The single-label demo: which digit (0-9) an image shows, from a folder per class.

Build the data with `python -m mlic.demo --task single_label --out data/digits`, then run
`ROOT_PATH=data/digits python train.py configs/demo_digits.py`. The same staged workflow as the
multi-label demo (range test → head → range test → full), with `task="single_label"`: softmax
cross-entropy, accuracy as the monitor, a confusion matrix in report.md. The backbone starts from
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
    experiment_name="demo_digits",
    task="single_label",
    data=Data(
        root=ROOT_PATH,
        train="train",  # folders: train/<class>/*.jpg
        valid="valid",
        test="test",
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
    loss=torch.nn.CrossEntropyLoss(label_smoothing=0.05),
    optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-2),
    stages=[
        Stage("head", epochs=2, freeze_backbone=True, lr="find"),
        Stage("full", epochs=4, lr="find", backbone_lr_scale=0.3),
    ],
)
