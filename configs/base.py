"""What the course configs share: the dataset location and the training augmentations."""

import albumentations as A

from mlic import env_path

ROOT_PATH = env_path("ROOT_PATH")

train_augmentations = A.Compose(
    [
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10), p=0.5),
        A.RandomBrightnessContrast(p=0.3),
        A.HueSaturationValue(p=0.3),
    ]
)
