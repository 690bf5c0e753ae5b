"""What the course configs share: the dataset location, the training augmentations, the data settings."""

import albumentations as A

from mlic import Data, env_path

ROOT_PATH = env_path("ROOT_PATH")

train_augmentations = A.Compose(
    [
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10), p=0.5),
        A.RandomBrightnessContrast(p=0.3),
        A.HueSaturationValue(p=0.3),
    ]
)


def course_data(**overrides) -> Data:
    """The course's data settings: course-layout CSVs under ROOT_PATH, 100 training batches per epoch."""
    settings = dict(
        root=ROOT_PATH,
        batch_size=64,
        num_workers=4,
        num_iteration_on_epoch=100,
        augmentations=train_augmentations,
    )
    settings.update(overrides)
    return Data(**settings)
