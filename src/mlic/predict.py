"""Predict genres for new images with a trained experiment's model file.

`python predict.py experiments/<name> IMAGES_DIR_OR_CSV --out predictions.csv` writes one row per image:
`image` (the path or id as given), one probability column per class, `predicted` (the classes at or
above their threshold, `|`-separated, in class order) and `error` (why an image could not be
predicted; such a row has no probabilities, and the other images are still predicted).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from mlic import io
from mlic.cli import run_cli
from mlic.data import IMAGE_EXTENSIONS, ImageTransform, list_folder, read_csv_file, read_rgb
from mlic.errors import CheckpointError, ConfigError, DataError, MlicError
from mlic.metrics import read_thresholds
from mlic.models import ModelFile, load_model_file, resolve_model_file

RESERVED_COLUMNS = ("image", "predicted", "error")
DEFAULT_WEIGHTS = "model.best.pth"

# ------------------------------------------------------------------------------------- the experiment


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


def default_device() -> str:
    """The GPU when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load(path: Path, transform: ImageTransform) -> torch.Tensor:
    """One image as a model input; DataError with one sentence when it cannot be."""
    if not path.exists():
        raise DataError(f"image {path} does not exist")
    if not path.is_file():
        raise DataError(f"image {path} is not a file")
    try:
        image = read_rgb(str(path))
    except DataError:
        raise DataError(f"image {path} cannot be decoded: not an image, or a corrupted one") from None
    except cv2.error as e:
        raise DataError(f"image {path} cannot be decoded: {e.err or e}") from None
    return transform(image)


def _forward(model: torch.nn.Module, batch: list[torch.Tensor], device: str) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.stack(batch).to(device))
        return torch.sigmoid(logits.float()).cpu().numpy().astype(np.float64)


def _frame(
    names: Sequence[str], classes: Sequence[str], probs: np.ndarray, thresholds: np.ndarray, errors: list[str]
) -> pd.DataFrame:
    hits = probs >= thresholds[None, :]  # NaN (a failed image) is never a hit
    df = pd.DataFrame({"image": list(names)})
    for j, name in enumerate(classes):
        df[name] = probs[:, j]
    df["predicted"] = ["|".join(c for c, on in zip(classes, row) if on) for row in hits]
    df["error"] = errors
    return df


def predict_paths(
    model_file: ModelFile,
    paths: list[Path],
    thresholds: np.ndarray,
    batch_size: int = 32,
    device: str | None = None,
    *,
    names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Predict every image: one row each, `image`, a probability per class, `predicted`, `error`.

    Images go through the model file's valid/test preprocessing in batches of `batch_size`, in eval
    mode without gradients, on `device` (default: the GPU when there is one; the model is moved there).
    An image that is missing or cannot be decoded gets a row with empty probabilities and a sentence in
    `error`. `names` fill the `image` column (default: the paths).
    """
    classes = list(model_file.classes)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (len(classes),):
        raise ValueError(f"thresholds has shape {thresholds.shape}, expected ({len(classes)},)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    names = [str(p) for p in paths] if names is None else list(names)
    if len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} paths")
    clash = [c for c in classes if c in RESERVED_COLUMNS]
    if clash:
        raise CheckpointError(f"class {clash[0]!r} has the name of an output column; rename the class")
    device = device or default_device()
    prep = model_file.prep
    transform = ImageTransform(prep.img_size, prep.mean, prep.std, None, prep.interpolation)
    model = model_file.model.to(device).eval()
    probs = np.full((len(paths), len(classes)), np.nan)
    errors = [""] * len(paths)
    for start in range(0, len(paths), batch_size):
        rows, batch = [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                batch.append(_load(Path(paths[i]), transform))
                rows.append(i)
            except DataError as e:
                errors[i] = str(e)
        if batch:
            probs[rows] = _forward(model, batch, device)
    return _frame(names, classes, probs, thresholds, errors)


def write_predictions(df: pd.DataFrame, out: Path) -> None:
    """Write the predictions atomically, probabilities with 6 decimals (empty for failed images)."""
    io.write_with(out, lambda p: df.to_csv(p, index=False, float_format="%.6f"))


# ----------------------------------------------------------------------------------------------- CLI


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of `predict.py`."""
    parser = argparse.ArgumentParser(prog="predict.py", description=__doc__.split("\n")[0])
    parser.add_argument("experiment", type=Path, help="the experiment folder train.py wrote")
    parser.add_argument(
        "input",
        type=Path,
        help="a folder of images (jpg, png, ...) or a CSV with a column of image paths or ids",
    )
    parser.add_argument("--out", type=Path, required=True, help="the predictions CSV to write")
    parser.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS,
        help="model file name in the experiment folder, or a path (default: %(default)s)",
    )
    parser.add_argument(
        "--column",
        help="CSV input: the column of image paths or ids (default: 'path' if any, else the first)",
    )
    parser.add_argument(
        "--images-dir", type=Path, help="CSV input: the column holds ids; each image is DIR/<image pattern>"
    )
    parser.add_argument(
        "--image-pattern", default="{id}.jpg", help="image file name from an id (default: %(default)s)"
    )
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="default: %(default)s")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return parser.parse_args(argv)


def _check_out(args: argparse.Namespace) -> None:
    out: Path = args.out
    if out.is_dir():
        raise MlicError(f"--out {out} is a folder; name the CSV file to write")
    if out.exists() and args.input.exists() and out.resolve() == args.input.resolve():
        raise MlicError(f"--out {out} is the input CSV; write the predictions to another file")
    if out.exists() and not args.force:
        raise MlicError(f"{out} already exists; pass --force to overwrite it or choose another --out")


def _none_predicted(df: pd.DataFrame, args: argparse.Namespace) -> DataError:
    """The error for a run in which every image failed (its rows are written all the same)."""
    hint = ""
    if args.input.is_file() and args.images_dir is None and df["error"].str.endswith("does not exist").all():
        hint = "; if the CSV column holds ids rather than paths, pass --images-dir"
    first = df["error"].iloc[0]
    return DataError(
        f"none of the {len(df)} images could be predicted ({first}); the rows are in {args.out}{hint}"
    )


def _run(args: argparse.Namespace) -> int:
    _check_out(args)
    weights = resolve_model_file(args.experiment, args.weights)
    names, paths = list_inputs(args.input, args.column, args.images_dir, args.image_pattern)
    model_file = load_model_file(weights)
    thresholds, source = read_thresholds(args.experiment, model_file.classes, model_file.threshold)
    print(f"model {weights} ({model_file.model_name}, {len(model_file.classes)} classes); {source}")
    df = predict_paths(model_file, paths, thresholds, args.batch_size, names=names)
    write_predictions(df, args.out)
    failed = df["error"] != ""
    if failed.all():
        raise _none_predicted(df, args)
    print(f"{int((~failed).sum())} predicted, {int(failed.sum())} failed: {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`predict.py`: exit 0 on success, 2 with one `error: ...` line on a user mistake."""
    args = parse_args(argv)
    return run_cli(lambda: _run(args), args.debug)
