"""The segmentation demo: which pixels of an image are a digit 0-4, a digit 5-9, or background.

Build the data with `python -m mlic.demo --task segmentation --out data/digit_masks`, then run
`ROOT_PATH=data/digit_masks python train.py configs/demo_segmentation.py`. The same staged workflow as
the other demos, on a segmentation-models-pytorch Unet: range test → decoder with the encoder frozen →
range test → full network. Masks are grey PNGs whose values name the classes (`data.classes` maps
each name to its value); the loss is Dice + cross-entropy, the monitor the mean IoU over the classes.
The encoder is timm's resnet10t (`tu-resnet10t`), starting from the stand-in for ImageNet weights
that `python -m mlic.demo` pretrains on scikit-learn's digits.
"""

import os
from functools import partial

import albumentations as A
import torch

from mlic import Config, Data, Model, Stage, env_path

ROOT_PATH = env_path("ROOT_PATH")
MODEL = "resnet10t"  # mlic.demo.build.DEMO_MODEL

config = Config(
    experiment_name="demo_segmentation",
    task="segmentation",  # one class per pixel
    data=Data(
        root=ROOT_PATH,
        train="train",  # folders: train/images/<id>.jpg with train/masks/<id>.png
        valid="valid",
        test="test",
        classes={"background": 0, "digit_0-4": 128, "digit_5-9": 255},  # mask value of each class
        img_size=(96, 64),  # (height, width); some smp models (FPN, PSPNet) need sides divisible by 32
        batch_size=32,
        num_workers=2,
        augmentations=A.Compose(  # albumentations moves each mask with its image
            [
                A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-8, 8), p=0.7),
                A.RandomBrightnessContrast(p=0.3),
            ]
        ),
    ),
    model=Model(
        name="Unet",  # any segmentation-models-pytorch architecture: FPN, DeepLabV3Plus, ...
        encoder=f"tu-{MODEL}",  # an smp encoder name, or "tu-" and a timm model
        pretrained=os.path.join(ROOT_PATH, f"pretrained_{MODEL}.pth"),
        kwargs={"encoder_depth": 3, "decoder_channels": (64, 32, 16)},
    ),
    optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-2),
    stages=[
        Stage("decoder", epochs=2, freeze_backbone=True, lr="find"),
        Stage("full", epochs=4, lr="find", backbone_lr_scale=0.3),
    ],
)
