"""Segmentation masks: reading them beside the images, checking their values, and one split's
record of ids, image paths, per-image class shares and mask paths.

Masks are PNGs beside the images (`masks/<image stem>.png`):

- one class index per pixel (`task="segmentation"`): a grey or palette PNG whose pixel values are the
  classes: with `data.classes` a list, value i is its i-th class; a dict maps names to values
  (`{"background": 0, "road": 255}`); without `data.classes` the classes are the values found in the
  train masks, named by their value ("0", "255").
- one mask per class (`task="multilabel_segmentation"`): `masks/<class>/<image stem>.png`, non-zero
  where the class is; classes may overlap. The classes are `data.classes`, else the subfolders' names.

Inside mlic a mask is a one-hot float tensor C×H×W (a probability per class and pixel), as a
classification target is a one-hot vector; every loss that takes probability targets takes it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mlic.config.schema import Data
from mlic.data.images import list_folder, pixel_size, too_many_pixels
from mlic.data.labels import image_paths, read_label_csv
from mlic.utils.errors import DataError

MASK_SUFFIX = ".png"


# ------------------------------------------------------------------------------------------ masks


def decode_mask(path: str | Path, max_pixels: int | None = Data.max_image_pixels) -> np.ndarray:
    """A mask PNG's pixel values, H×W (a palette PNG gives its palette indices; an RGB mask must be grey);
    a mask with more than `max_pixels` pixels (`data.max_image_pixels`) is refused before it is decoded."""
    path = Path(path)
    refused = too_many_pixels(path, max_pixels, "mask")
    if refused:
        raise DataError(refused)
    try:
        with Image.open(path) as image:
            mode = image.mode
            values = np.array(image)
    except FileNotFoundError:
        raise DataError(f"mask {path} does not exist; every image needs its mask of the same name") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # Pillow's own limit, past ours
        raise DataError(f"mask {path} cannot be decoded ({e}); replace it") from None
    if values.ndim == 3:
        if mode in ("LA", "RGBA") or not (values[..., :3] == values[..., :1]).all():
            raise DataError(
                f"mask {path} is a colour ({mode}) image; a mask holds one class value per pixel: save it "
                f"as a grey (L) or palette (P) PNG"
            )
        values = values[..., 0]
    return values


def image_size(path: str, max_pixels: int | None = Data.max_image_pixels) -> tuple[int, int]:
    """(height, width) of an image file, from its header; more than `max_pixels` pixels is refused."""
    refused = too_many_pixels(path, max_pixels)
    if refused:
        raise DataError(refused)
    size = pixel_size(path)
    if size is None:
        raise DataError(f"image {path} cannot be decoded; replace or remove it")
    return size[1], size[0]


def class_values(cfg_classes: list[str] | dict[str, int] | None, classes: list[str]) -> np.ndarray:
    """The mask value of each class: a dict's values, a list's positions, else the names read as numbers."""
    if isinstance(cfg_classes, dict):
        return np.array([int(cfg_classes[c]) for c in classes])
    if cfg_classes is not None:
        return np.arange(len(classes))
    return np.array([int(c) for c in classes])


def index_of(values: np.ndarray, class_vals: np.ndarray, path: str | Path, classes: list[str]) -> np.ndarray:
    """The class index of every pixel of a mask's raw `values`; a value that is no class names the file."""
    lookup = np.full(max(int(values.max()), int(class_vals.max())) + 1, -1, dtype=np.int64)
    lookup[class_vals] = np.arange(len(class_vals))
    index = lookup[values]
    if (index < 0).any():
        bad = sorted(set(np.unique(values[index < 0]).tolist()))
        known = ", ".join(f"{v} ({c})" for v, c in zip(class_vals.tolist()[:10], classes[:10]))
        raise DataError(
            f"mask {path} has the value {bad[0]}, which is not a class (the classes' values: {known}); fix "
            f"the mask or list the class in data.classes"
        )
    return index


def onehot(index: np.ndarray, num_classes: int) -> np.ndarray:
    """H×W class indices → C×H×W float32 one-hot."""
    return (index[None] == np.arange(num_classes)[:, None, None]).astype(np.float32)


class MaskReader:
    """Reads one image's mask as class indices (H×W, multi-class) or 0/1 channels (H×W×C, multi-label)."""

    def __init__(
        self,
        classes: list[str],
        values: np.ndarray | None,
        multilabel: bool,
        max_pixels: int | None = Data.max_image_pixels,
    ) -> None:
        self.classes = classes
        self.values = values
        self.multilabel = multilabel
        self.max_pixels = max_pixels  # `data.max_image_pixels`: a larger mask is refused before decoding

    def paths(self, mask: str) -> list[str]:
        """The files of one mask entry: itself, or for multi-label `<its folder>/<class>/<its name>`."""
        if not self.multilabel:
            return [mask]
        entry = Path(mask)
        return [str(entry.parent / c / entry.name) for c in self.classes]

    def __call__(self, mask: str) -> np.ndarray:
        if self.multilabel:
            files = self.paths(mask)
            channels = [decode_mask(p, self.max_pixels) > 0 for p in files]
            shapes = {c.shape for c in channels}
            if len(shapes) > 1:
                raise DataError(f"the class masks of {files[0]} differ in size: {sorted(shapes)}")
            return np.stack(channels, axis=-1).astype(np.uint8)
        values = decode_mask(mask, self.max_pixels)
        return index_of(values, self.values, mask, self.classes).astype(np.uint8)

    def target(self, mask: np.ndarray) -> np.ndarray:
        """A read (and transformed) mask as the C×H×W float target."""
        if self.multilabel:
            return np.ascontiguousarray(mask.transpose(2, 0, 1), dtype=np.float32)
        return onehot(mask.astype(np.int64), len(self.classes))


class Masks:
    """The masks of one split, in its rows' order: `masks[i]` reads row i's mask (`MaskReader`)."""

    def __init__(self, entries: np.ndarray, reader: MaskReader) -> None:
        self.entries = np.asarray(entries)
        self.reader = reader

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.reader(str(self.entries[index]))

    def subset(self, rows: np.ndarray) -> Masks:
        return Masks(self.entries[rows], self.reader)

    def target(self, mask: np.ndarray) -> torch.Tensor:
        """A read (and transformed) mask as the C×H×W float target the loss takes."""
        return torch.from_numpy(self.reader.target(mask))


def _split_files(path: Path, cfg: Data) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(ids, image paths, mask entries) of a split: a folder with `images/` and `masks/`, or a CSV of ids
    (images at `data.root/data.images/data.image_pattern`, masks at `data.root/data.masks/data.mask_pattern`).
    A multi-label entry names the class-less path; `MaskReader.paths` puts the class folder in."""
    if path.is_dir():
        if not (path / "images").is_dir() or not (path / "masks").is_dir():
            raise DataError(
                f"segmentation split {path} needs the subfolders images/ and masks/ (masks/<image stem>.png), "
                f"or point the split at a CSV of ids"
            )
        images = list_folder(path / "images")
        ids = np.array([p.stem for p in images])
        return (
            ids,
            np.array([str(p) for p in images]),
            [str(path / "masks" / f"{i}{MASK_SUFFIX}") for i in ids],
        )
    df = read_label_csv(path, cfg.id_column)
    ids = df[cfg.id_column].astype(str).to_numpy()
    mask_dir = Path(cfg.root) / cfg.masks
    return ids, image_paths(ids, cfg), [str(mask_dir / cfg.mask_pattern.format(id=i)) for i in ids]


def _found_classes(masks: list[str], multilabel: bool, workers: int, max_pixels: int | None) -> list[str]:
    """The classes of a train split without `data.classes`: the values in its masks, or the class folders."""
    if multilabel:
        folder = Path(masks[0]).parent
        subs = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not subs:
            raise DataError(
                f"mask folder {folder} has no class subfolders; multi-label masks are "
                f"masks/<class>/<image stem>.png (or list data.classes)"
            )
        return subs
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = set()
        for values in pool.map(lambda m: np.unique(decode_mask(m, max_pixels)), masks):
            found.update(values.tolist())
    return [str(v) for v in sorted(found)]


def segmentation_labels(path: Path, cfg: Data, classes: list[str] | None, multilabel: bool) -> tuple:
    """(ids, image paths, targets, classes, `Masks`) of one split. Every mask is read once here, so
    a missing one, one whose size differs from its image, or a value that is no class stops the run with
    one sentence before anything is written. The targets are each image's share of pixels per class
    (rows × classes): what samplers, `data_fraction`, the class priors and the report's supports read."""
    ids, paths, masks = _split_files(path, cfg)
    workers = min(8, os.cpu_count() or 1)
    if classes is None and cfg.classes is None:
        classes = _found_classes(masks, multilabel, workers, cfg.max_image_pixels)
    classes = [str(c) for c in (classes if classes is not None else cfg.classes)]  # a dict's names
    values = None if multilabel else class_values(cfg.classes, classes)
    reader = MaskReader(classes, values, multilabel, cfg.max_image_pixels)

    def share(i: int) -> np.ndarray:
        h, w = image_size(paths[i], cfg.max_image_pixels)  # the image's header first: it may be a bomb
        mask = reader(masks[i])
        if mask.shape[:2] != (h, w):
            raise DataError(
                f"mask {reader.paths(masks[i])[0]} is {mask.shape[1]}×"
                f"{mask.shape[0]} pixels but its image {paths[i]} is {w}×{h}; a mask has its image's size"
            )
        if multilabel:
            return mask.reshape(-1, len(classes)).mean(0)
        return np.bincount(mask.ravel(), minlength=len(classes)) / mask.size

    with ThreadPoolExecutor(max_workers=workers) as pool:
        targets = np.array(list(pool.map(share, range(len(ids)))), dtype=np.float32)
    return ids, paths, targets.reshape(len(ids), len(classes)), classes, Masks(np.array(masks), reader)
