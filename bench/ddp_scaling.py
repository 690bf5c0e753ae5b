"""One process against two (Lightning's DDP) on the demo: wall time, training images per second and the
final test metrics, from the same config and seed.

Usage (from the repo root, after `make install`):
    .venv/bin/python bench/ddp_scaling.py [--data data/demo] [--processes 1 2]

Each run is `train.py configs/demo.py` with `trainer.devices=N, strategy=ddp` for N > 1, in its own
experiment (`demo_ddp<N>`). Images per second counts the training images each epoch goes through
(train split × epochs of every stage) over the training time report.md gives. Prints Markdown rows for
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "mlic.demo", "--out", args.data], check=True)
    env = dict(os.environ, ROOT_PATH=args.data)
    n_train = len(pd.read_csv(Path(args.data) / "train_df.csv"))
    print("| processes | wall time | training | train images/s | test mAP | test F1 macro |")
    print("|---|---|---|---|---|---|")
    for n in args.processes:
        name = f"demo_ddp{n}"
        extra = ["--set", f"experiment_name={name}"]
        if n > 1:
            extra += ["--set", f"trainer.devices={n}", "--set", "trainer.strategy=ddp"]
        start = time.time()
        subprocess.run([sys.executable, "train.py", "configs/demo.py", *extra], check=True, env=env)
        wall = time.time() - start
        exp = Path("experiments") / name
        report = (exp / "report.md").read_text()
        seconds = float(re.search(r"training took (\d+) s", report)[1])
        epochs = len(pd.read_csv(exp / "metrics.csv"))
        lines = report.splitlines()
        header = next(line for line in lines if line.startswith("| split |"))
        test_row = next(line for line in lines if line.startswith("| test |"))
        test = dict(zip(*([c.strip() for c in row.strip("|").split("|")] for row in (header, test_row))))
        print(
            f"| {n} | {wall:.0f} s | {seconds:.0f} s | {n_train * epochs / seconds:.0f} | {test['map']} | "
            f"{test['f1_macro']} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
