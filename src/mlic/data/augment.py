"""Augmentations mlic adds to albumentations' own, usable inside `A.Compose` like any of them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np

from mlic.data.images import read_rgb
from mlic.utils.errors import ConfigError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@lru_cache(maxsize=64)
def _background(path: str, height: int, width: int) -> np.ndarray:
    """The background at `path` scaled to cover height × width and centre-cropped to it."""
    image = read_rgb(path)
    h, w = image.shape[:2]
    scale = max(height / h, width / w)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    return np.ascontiguousarray(image[top : top + height, left : left + width])


class InsertBackground(A.ImageOnlyTransform):
    """Paste the image, shrunk, onto a random image of a backgrounds folder (seed 000's background
    insertion): the result has the input's size, the image scaled by a factor drawn from
    [1 − `max_ratio`, 1] on each side and placed at random, the background filling the rest.

    An RGBA image (4 channels) is pasted through its alpha channel, so only its foreground covers the
    background; the result is RGB. `p` is the probability of applying it, as for any albumentations
    transform. The backgrounds are read when first drawn (and the last 64 kept, resized).
    """

    def __init__(self, backgrounds: str | Path, max_ratio: float = 0.5, p: float = 0.5) -> None:
        super().__init__(p=p)
        folder = Path(backgrounds)
        if not folder.is_dir():
            raise ConfigError(f"InsertBackground: backgrounds folder {folder} does not exist")
        self.paths = sorted(str(f) for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise ConfigError(
                f"InsertBackground: backgrounds folder {folder} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        if not 0.0 <= max_ratio < 1.0:
            raise ConfigError(f"InsertBackground: max_ratio must be at least 0 and below 1, got {max_ratio}")
        self.backgrounds = str(folder)
        self.max_ratio = float(max_ratio)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        scale = 1.0 - self.py_random.uniform(0.0, self.max_ratio)
        h, w = max(1, round(height * scale)), max(1, round(width * scale))
        return {
            "background": self.paths[self.py_random.randrange(len(self.paths))],
            "size": (h, w),
            "top": self.py_random.randint(0, height - h),
            "left": self.py_random.randint(0, width - w),
        }

    def apply(
        self, img: np.ndarray, background: str, size: tuple[int, int], top: int, left: int, **params: Any
    ) -> np.ndarray:
        height, width = img.shape[:2]
        out = _background(background, height, width).copy()
        h, w = size
        small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA) if (h, w) != (height, width) else img
        region = out[top : top + h, left : left + w]
        if small.ndim == 3 and small.shape[2] == 4:  # RGBA: only the foreground covers the background
            alpha = small[..., 3:4].astype(np.float32) / 255.0
            region[:] = (small[..., :3] * alpha + region * (1.0 - alpha)).round().astype(np.uint8)
        else:
            region[:] = small[..., :3]
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("backgrounds", "max_ratio")


__all__ = ["InsertBackground"]
