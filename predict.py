"""Predict genres for new images: `python predict.py experiments/<name> IMAGES_DIR_OR_CSV --out preds.csv`.

One row per image: the probability of each class, the predicted classes (per-class thresholds from the
experiment's thresholds.json when it has one) and, for an image that could not be read, why.
Run `python predict.py --help` for the options; the work is done by `mlic.predict`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from mlic.predict import main as predict_main

    return predict_main(argv)


if __name__ == "__main__":
    sys.exit(main())
