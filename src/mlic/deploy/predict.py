"""Predict classes for new images with a trained experiment's model file (the work behind `predict.py`).

`python predict.py experiments/<name> IMAGES_DIR_OR_CSV --out predictions.csv` writes one row per image:
`image` (the path or id as given), the task's columns (`Task.predictions`), and `error` (why an image
could not be predicted; such a row has no probabilities, and the other images are still predicted).
Multi-label: one probability column per class and `predicted`, the classes at or above their
threshold, `|`-separated, in class order. Single-label: `predicted` (the most probable class), then
`top1`, `top1_prob`, ... for the `--top-k` most probable classes. Segmentation: each class's share of
the predicted pixels and `predicted`, the classes that cover any; `--masks DIR` writes the masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image

from mlic.config.schema import Data
from mlic.data.images import (
    IMAGE_EXTENSIONS,
    ImageTransform,
    list_folder,
    read_rgb,
    resize_nearest,
    too_many_pixels,
)
from mlic.data.labels import read_csv_file
from mlic.engine.runtime import device_for
from mlic.evaluate.evaluation import probabilities
from mlic.experiment.checkpoints import ModelFile
from mlic.metrics.calibration import Calibration
from mlic.tasks import get_task
from mlic.utils import io
from mlic.utils.errors import CheckpointError, ConfigError, DataError
from mlic.utils.progress import progress

RESERVED_COLUMNS = ("image", "predicted", "error")

# ------------------------------------------------------------------------------------------ the inputs


def _pick_column(df: pd.DataFrame, path: Path, column: str | None) -> str:
    columns = [str(c) for c in df.columns]
    if column is None:
        return "path" if "path" in columns else columns[0]
    if column not in columns:
        raise DataError(
            f"CSV {path} has no column {column!r} (columns: {', '.join(columns)}); set --column to the "
            f"column of image paths or ids"
        )
    return column


def _image_path(value: str, base: Path, images_dir: Path | None, image_pattern: str) -> Path:
    if images_dir is None:
        given = Path(value)
        return given if given.is_absolute() else base / given
    try:
        return images_dir / image_pattern.format(id=value)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(
            f"--image-pattern {image_pattern!r} cannot be filled in ({type(e).__name__}: {e}); "
            f"it may only use {{id}}, as in '{{id}}.jpg'"
        ) from None


def list_csv(
    path: Path, column: str | None = None, images_dir: Path | None = None, image_pattern: str = "{id}.jpg"
) -> tuple[list[str], list[Path]]:
    """(values as given, image paths) of a CSV's column of paths, or of ids with `images_dir`.

    The column is `column`, else one named `path`, else the first. Relative paths are resolved against
    the CSV's folder; with `images_dir` each value is an id and its image `images_dir / image_pattern`.
    """
    path = Path(path)
    if images_dir is not None and not Path(images_dir).is_dir():
        raise DataError(f"--images-dir {images_dir} is not a folder")
    df = read_csv_file(path, "CSV", "pass a folder of images or a CSV of image paths", dtype=str)
    name = _pick_column(df, path, column)
    values = [str(v).strip() for v in df[name].tolist()]
    empty = [i for i, v in enumerate(values) if not v]
    if empty:
        raise DataError(f"CSV {path}, row {empty[0] + 2}: column {name!r} is empty")
    images = None if images_dir is None else Path(images_dir)
    return values, [_image_path(v, path.parent, images, image_pattern) for v in values]


def list_inputs(
    source: Path, column: str | None = None, images_dir: Path | None = None, image_pattern: str = "{id}.jpg"
) -> tuple[list[str], list[Path]]:
    """(names as given, image paths) of a folder of images, a CSV (see `list_csv`) or one image file."""
    source = Path(source)
    if source.is_dir():
        paths = list_folder(source)
        return [str(p) for p in paths], paths
    if not source.is_file():
        raise DataError(f"input {source} does not exist; pass a folder of images or a CSV")
    if source.suffix.lower() in IMAGE_EXTENSIONS:
        return [str(source)], [source]
    return list_csv(source, column, images_dir, image_pattern)


# ------------------------------------------------------------------------------------------ prediction


def _load(path: Path, transform: ImageTransform) -> tuple[torch.Tensor, tuple[int, int]]:
    """One image as a model input, and its (height, width); DataError with one sentence when it cannot be."""
    if not path.exists():
        raise DataError(f"image {path} does not exist")
    if not path.is_file():
        raise DataError(f"image {path} is not a file")
    refused = too_many_pixels(path, Data.max_image_pixels, fix="shrink it, or leave it out")
    if refused:
        raise DataError(refused)
    try:
        image = read_rgb(str(path))
    except DataError:
        raise DataError(f"image {path} cannot be decoded: not an image, or a corrupted one") from None
    except cv2.error as e:
        raise DataError(f"image {path} cannot be decoded: {e.err or e}") from None
    return transform(image), image.shape[:2]


def mask_file_names(names: Sequence[str]) -> list[str]:
    """A PNG name per input (its file's stem), numbered where two inputs share a stem."""
    stems = [Path(n).stem or "image" for n in names]
    seen: dict[str, int] = {}
    out = []
    for stem in stems:
        seen[stem] = seen.get(stem, 0) + 1
        out.append(f"{stem}.png" if seen[stem] == 1 else f"{stem}_{seen[stem]}.png")
    return out


def write_masks(
    probs: np.ndarray,
    sizes: list[tuple[int, int]],
    names: list[str],
    out: Path,
    classes: Sequence[str],
    multilabel: bool,
) -> None:
    """Save each image's predicted mask at the image's own size (nearest neighbour): `out/<name>.png`
    holding the class index of each pixel, or for multi-label `out/<class>/<name>.png`, 255 where the
    class is (sigmoid at least 0.5)."""
    for folder in [out / c for c in classes] if multilabel else [out]:
        folder.mkdir(parents=True, exist_ok=True)
    for p, size, name in zip(probs, sizes, names):
        if multilabel:
            for j, c in enumerate(classes):
                mask = resize_nearest(((p[j] >= 0.5) * 255).astype(np.uint8), size)
                io.write_with(out / c / name, lambda f, m=mask: Image.fromarray(m).save(f, format="PNG"))
        else:
            mask = resize_nearest(p.argmax(0).astype(np.uint8), size)
            io.write_with(out / name, lambda f, m=mask: Image.fromarray(m).save(f, format="PNG"))


def _frame(
    task: str,
    names: Sequence[str],
    classes: Sequence[str],
    probs: np.ndarray,
    thresholds: np.ndarray,
    errors: list[str],
    top_k: int | None,
) -> pd.DataFrame:
    columns = get_task(task).predictions(list(classes), probs, thresholds, top_k)
    return pd.DataFrame({"image": list(names), **columns, "error": errors})


def _check_arguments(
    classes: list[str], thresholds: np.ndarray, batch_size: int, names: list[str], paths: list[Path]
) -> None:
    if thresholds.shape != (len(classes),):
        raise ValueError(f"thresholds has shape {thresholds.shape}, expected ({len(classes)},)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} paths")
    clash = [c for c in classes if c in RESERVED_COLUMNS]
    if clash:
        raise CheckpointError(f"class {clash[0]!r} has the name of an output column; rename the class")


def predict_paths(
    model_file: ModelFile,
    paths: list[Path],
    thresholds: np.ndarray,
    batch_size: int = 32,
    device: str | None = None,
    *,
    names: Sequence[str] | None = None,
    show_progress: bool = True,
    top_k: int | None = None,
    masks_dir: Path | None = None,
    calibration: Calibration | None = None,
) -> pd.DataFrame:
    """Predict every image: one row each, `image`, a probability per class, `predicted`, `error`.

    Images go through the model file's valid/test preprocessing in batches of `batch_size`, in eval
    mode without gradients, on `device` (default: the GPU when there is one; the model is moved there).
    An image that is missing or cannot be decoded gets a row with empty probabilities and a sentence in
    `error`. `names` fill the `image` column (default: the paths). For a segmentation model each row
    holds every class's share of the image's predicted pixels; with `masks_dir` the masks are written
    there too (`write_masks`). With `calibration` (the experiment's `calibration.json`) the
    probabilities are the calibrated ones, which the experiment's thresholds were tuned on.
    """
    classes = list(model_file.classes)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    names = [str(p) for p in paths] if names is None else list(names)
    _check_arguments(classes, thresholds, batch_size, names, paths)
    device = device or device_for("auto")
    transform = model_file.prep.transform()
    model = model_file.inference_model().to(device).eval()  # with its test-time augmentation, if any
    probs = np.full((len(paths), len(classes)), np.nan)
    errors = [""] * len(paths)
    bar = progress(None, len(paths), "predicting", show_progress)
    task = get_task(model_file.task)
    if masks_dir is not None and not task.pixelwise:
        raise ConfigError(f"--masks is for segmentation models; {model_file.task!r} predicts no masks")
    file_names = mask_file_names(names)
    for start in range(0, len(paths), batch_size):
        rows, batch, sizes = [], [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                x, size = _load(Path(paths[i]), transform)
                batch.append(x)
                sizes.append(size)
                rows.append(i)
            except DataError as e:
                errors[i] = str(e)
        if batch:
            out = probabilities(model, torch.stack(batch).to(device), model_file.task)
            if calibration is not None:
                out = calibration.apply(out, task.softmax)
            probs[rows] = task.per_image(out)
            if masks_dir is not None:
                multilabel = bool(getattr(task, "multilabel", False))
                write_masks(out, sizes, [file_names[i] for i in rows], Path(masks_dir), classes, multilabel)
        bar.update(min(batch_size, len(paths) - start))
    bar.close()
    return _frame(model_file.task, names, classes, probs, thresholds, errors, top_k)


def write_predictions(df: pd.DataFrame, out: Path) -> None:
    """Write the predictions atomically, probabilities with 6 decimals (empty for failed images)."""
    io.write_with(out, lambda p: df.to_csv(p, index=False, float_format="%.6f"))
