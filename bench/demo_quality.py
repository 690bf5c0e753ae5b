"""Demo quality and time: train configs/demo.py, compare its test mAP with the chance level.

Usage (from the repo root, after `make install`):
    .venv/bin/python bench/demo_quality.py [--data data/demo]

Chance level: a predictor that ignores the image has, per class, an average precision equal to the
class's frequency in the split; its mAP is the mean frequency over classes. The script prints a
Markdown row for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mlic.experiment.checkpoints import model_file_metrics


def chance_map(table: Path) -> float:
    """mAP of a predictor that ignores the image: the mean class frequency."""
    df = pd.read_csv(table)
    labels = df.drop(columns=["Id"]).to_numpy(dtype=float)
    return float(np.mean(labels.mean(axis=0)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/demo")
    args = parser.parse_args()
    py = sys.executable
    subprocess.run([py, "-m", "mlic.demo", "--out", args.data], check=True)
    start = time.time()
    env = dict(os.environ, ROOT_PATH=args.data)
    subprocess.run([py, "train.py", "configs/demo.py"], check=True, env=env)
    seconds = time.time() - start
    exp = Path("experiments/demo")
    best = model_file_metrics(exp / "model.best.pth")
    report = (exp / "report.md").read_text()
    lines = report.splitlines()
    header = next(line for line in lines if line.startswith("| split |"))  # the metrics table's own columns
    test_row = next(line for line in lines if line.startswith("| test |"))
    test = dict(zip(*([c.strip() for c in row.strip("|").split("|")] for row in (header, test_row))))
    chance = chance_map(Path(args.data) / "test_df.csv")
    print(
        f"\n| demo (best epoch from stage {best.get('stage')}) | test mAP {test['map']} | chance mAP {chance:.4f} | "
        f"test AUC {test['auc']} | F1 micro {test['f1_micro']} | F1 macro {test['f1_macro']} | "
        f"train.py wall time {seconds:.0f} s |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
