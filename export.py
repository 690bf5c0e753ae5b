"""Export a trained experiment: `python export.py experiments/train_full [--format all]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlic.deploy.export import FILES, export_experiment
from mlic.utils.cli import run_cli

FORMATS = list(FILES)  # torchscript, export, onnx


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", help="the experiment folder, e.g. experiments/train_full")
    parser.add_argument(
        "--weights",
        default="model.best.pth",
        help="model file in the folder (or a path); default model.best.pth",
    )
    parser.add_argument(
        "--format",
        choices=[*FORMATS, "all"],
        default="all",
        help="torchscript → model.ts, export → model.pt2 (torch.export), onnx → model.onnx; default all "
        "(onnx only when the onnx extra is installed)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        help="a folder of images to check the export on (default: the experiment's valid split, found by "
        "running the folder's config.py, which is Python code: use folders you trust, or pass --images)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def _run() -> int:
        formats = FORMATS if args.format == "all" else [args.format]
        written = export_experiment(Path(args.experiment), args.weights, formats, args.images)
        for fmt, path in written.items():
            print(f"{fmt:<12} {path}")
        print(f"metadata     {Path(args.experiment) / 'export.json'} (input spec, classes, thresholds)")
        missing = [FILES[f] for f in formats if f not in written]
        if missing:
            print(f"skipped      {', '.join(missing)}")
        return 0

    return run_cli(_run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
