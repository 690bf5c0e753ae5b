"""Images: reading (RGB, one clear sentence for a file that is not an image or has more pixels than
`data.max_image_pixels`), antialiased resizing, and the transform from an image to a model input
(`Preprocessing`, what a model expects; `ImageTransform`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from struct import error as StructError

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image

from mlic.config.schema import Data
from mlic.utils.errors import ConfigError, DataError

# `augmentations=` takes an albumentations pipeline, or any callable on an HxWx3 uint8 array
_ALBU_TYPES: tuple[type, ...] = (A.BasicTransform, A.BaseCompose)


_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
    "hamming": Image.Resampling.HAMMING,
}


def resize(image: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize an HxWx3 uint8 image to `size` (height, width) with `interpolation`, antialiased.

    Pillow's resize widens its filter by the shrink factor wherever a side shrinks, so detail finer
    than the new size is averaged away instead of aliased (`cv2.resize` with bilinear or bicubic
    interpolation samples a fixed neighbourhood and aliases). It is what timm's and torchvision's
    transforms do on PIL images, so models pretrained there see the images they were trained on.
    """
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    resized = Image.fromarray(image).resize((w, h), _FILTERS.get(interpolation, Image.Resampling.BILINEAR))
    return np.array(resized)  # writable, as cv2 returns it: augmentations may edit in place


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_folder(folder: Path) -> list[Path]:
    """Every file directly inside `folder` with an image extension (any case), sorted by name."""
    folder = Path(folder)
    images = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.name,
    )
    if not images:
        raise DataError(f"folder {folder} holds no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)})")
    return images


# what a plugin of Pillow raises on a header that is not its format (Pillow's `Image.open` catches the same)
_NOT_THIS_FORMAT = (SyntaxError, IndexError, TypeError, ValueError, KeyError, EOFError, OSError, StructError)


def pixel_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) of an image file, read from its header without decoding it, whatever its name's
    extension; None where the file cannot be opened or Pillow knows no such header.

    Pillow's format plugins are asked one by one, as `Image.open` does, but without `Image.open`'s own
    decompression-bomb check: it raises above its fixed limit (about 179 megapixels) without saying the
    size, and warns from half of it; the limit here is `data.max_image_pixels` (`too_many_pixels`)."""
    Image.init()
    try:
        with open(path, "rb") as f:
            prefix = f.read(16)
            for name in list(Image.ID):
                factory, accept = Image.OPEN[name]
                try:
                    known = accept is None or accept(prefix)
                    if known and not isinstance(known, str):  # a string is Pillow's warning: not this format
                        f.seek(0)
                        return factory(f, str(path)).size
                except _NOT_THIS_FORMAT:
                    continue
    except OSError:
        return None
    return None


RAISE_LIMIT = "shrink or remove it, or raise data.max_image_pixels (None turns the check off)"


def too_many_pixels(
    path: str | Path, max_pixels: int | None, what: str = "image", fix: str = RAISE_LIMIT
) -> str | None:
    """The sentence that refuses the image (or mask: `what`) at `path` when its header says it has more
    than `max_pixels` pixels, before a decoder allocates them all (a decompression bomb: a small file that
    decodes to gigabytes); None when it has no more, when `max_pixels` is None or the header is unknown."""
    size = None if max_pixels is None else pixel_size(path)
    if size is None or size[0] * size[1] <= max_pixels:
        return None
    w, h = size
    return (
        f"{what} {path} is {w}×{h} = {w * h:,} pixels, over data.max_image_pixels ({max_pixels:,}): a "
        f"decompression bomb, or far larger than training needs; {fix}"
    )


def read_rgb(path: str, max_pixels: int | None = Data.max_image_pixels) -> np.ndarray:
    """Decode an image file to an HxWx3 uint8 RGB array (grey and RGBA images included); an image with
    more than `max_pixels` pixels (by default the default of `data.max_image_pixels`) is refused from its
    header, before it is decoded."""
    refused = too_many_pixels(path, max_pixels)
    if refused:
        raise DataError(refused)
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"image {path} cannot be decoded; replace or remove it from the label table")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass
class Preprocessing:
    """What a model expects of its input: size (height, width), interpolation and normalisation."""

    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str

    def transform(self, augmentations: Callable | None = None) -> ImageTransform:
        """Images to model inputs; without `augmentations`, the valid/test/predict transform."""
        return ImageTransform(self.img_size, self.mean, self.std, augmentations, self.interpolation)


class ImageTransform:
    """Resize to `img_size`, apply the augmentations, normalise and return a CHW float tensor."""

    def __init__(
        self,
        img_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        augmentations: Callable | None = None,
        interpolation: str = "bilinear",
    ) -> None:
        self.img_size = tuple(img_size)
        self.mean = np.asarray(mean, dtype=np.float32) * 255.0
        self.std = np.asarray(std, dtype=np.float32) * 255.0
        self.augmentations = augmentations
        self.interpolation = interpolation
        # the probability of augmenting an image, set each epoch by `AugmentationSchedule`; below 0:
        # unscheduled (the pipeline's own). In shared memory, so loader workers see every change.
        self.schedule_p = torch.full((1,), -1.0).share_memory_()

    def set_p(self, p: float | None) -> None:
        """Augment each image with probability `p` from now on (None: the pipeline's own setting)."""
        self.schedule_p.fill_(-1.0 if p is None else float(p))

    def reseed(self, seed: int) -> None:
        """Reseed an albumentations pipeline, which keeps its own generator apart from numpy's."""
        if hasattr(self.augmentations, "set_random_seed"):
            self.augmentations.set_random_seed(seed)

    def resized(self, image: np.ndarray) -> np.ndarray:
        """`image` resized to `img_size` (what an exported model takes), before any augmentation."""
        return resize(image, self.img_size, self.interpolation)

    def _augment(
        self, image: np.ndarray, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self.augmentations is None:
            return image, mask
        p = float(self.schedule_p[0])
        if p >= 0.0:
            if isinstance(self.augmentations, A.BaseCompose):
                self.augmentations.p = p  # the pipeline draws it with its own generator
            elif np.random.random() >= p:
                return image, mask
        if mask is not None:
            if not isinstance(self.augmentations, _ALBU_TYPES):
                raise ConfigError(
                    f"field 'data.augmentations' is a {type(self.augmentations).__name__}; segmentation needs "
                    f"an albumentations pipeline (A.Compose), which moves each mask with its image"
                )
            both = self.augmentations(image=image, mask=mask)
            out, mask = both["image"], both["mask"]
        elif isinstance(self.augmentations, _ALBU_TYPES):
            out = self.augmentations(image=image)["image"]
        else:
            out = self.augmentations(image)
        if not (
            isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        ):
            got = (
                f"{out.dtype} array of shape {out.shape}"
                if isinstance(out, np.ndarray)
                else type(out).__name__
            )
            raise ConfigError(
                f"field 'data.augmentations' returned {got}; it must return an HxWx3 uint8 RGB array"
            )
        return out, mask

    def _normalised(self, image: np.ndarray) -> torch.Tensor:
        x = (image.astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return self._normalised(self.resized(self._augment(self.resized(image))[0]))

    def pair(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """An image and its mask (H×W class indices or H×W×C 0/1 channels) through the same resizing and
        augmentations (the mask resized by nearest neighbour): the model input and the mask at `img_size`."""
        image, mask = self._augment(self.resized(image), resize_nearest(mask, self.img_size))
        return self._normalised(self.resized(image)), resize_nearest(mask, self.img_size)


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A mask (H×W or H×W×C) resized to `size` (height, width) by taking each new pixel's nearest source
    pixel: values stay class values, whatever the number of channels."""
    h, w = size
    if mask.shape[:2] == (h, w):
        return mask
    rows = np.minimum(((np.arange(h) + 0.5) * mask.shape[0] / h).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * mask.shape[1] / w).astype(np.int64), mask.shape[1] - 1)
    return np.ascontiguousarray(mask[rows][:, cols])
