"""Predict classes for new images: `python predict.py experiments/<name> IMAGES_DIR_OR_CSV --out preds.csv`.

One row per image: for a multi-label experiment the probability of each class and the predicted classes
(per-class thresholds from the experiment's thresholds.json when it has one); for a single-label one the
most probable class and the --top-k classes with their probabilities; for an image that could not be
read, why.
Run `python predict.py --help` for the options; the work is done by `mlic.deploy.predict`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mlic.deploy.predict import list_inputs, predict_paths, write_predictions
from mlic.evaluate.evaluation import open_experiment
from mlic.utils.cli import run_cli
from mlic.utils.errors import DataError, MlicError

DEFAULT_WEIGHTS = "model.best.pth"


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
    parser.add_argument(
        "--top-k",
        type=_positive_int,
        default=5,
        help="single-label experiments: how many of the most probable classes to write (default: %(default)s)",
    )
    parser.add_argument(
        "--masks",
        type=Path,
        default=None,
        help="segmentation experiments: write each image's predicted mask here as a PNG (DIR/<image stem>.png, "
        "the class index per pixel; multi-label: DIR/<class>/<image stem>.png)",
    )
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
    trained = open_experiment(args.experiment, args.weights)
    names, paths = list_inputs(args.input, args.column, args.images_dir, args.image_pattern)
    mf = trained.model_file
    thresholds, source = trained.thresholds()
    calibration = trained.calibration()
    if calibration is not None:
        source += f"; {calibration.method}-calibrated probabilities (calibration.json)"
    if mf.task == "multi_label":
        print(f"model {trained.path} ({mf.model_name}, {len(mf.classes)} classes); {source}")
    else:
        print(f"model {trained.path} ({mf.model_name}, {len(mf.classes)} classes, {mf.task})")
    df = predict_paths(
        mf,
        paths,
        thresholds,
        args.batch_size,
        names=names,
        top_k=args.top_k,
        masks_dir=args.masks,
        calibration=calibration,
    )
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


if __name__ == "__main__":
    sys.exit(main())
