"""SWA on the demo: the average of the top-5 full-stage checkpoints vs the best single checkpoint.

Usage (from the repo root, after `make install`):
    .venv/bin/python bench/swa_demo.py [--data data/demo] [--full-epochs 8] [--ema-decay 0.99]

It trains `configs/demo.py` as experiment `demo_swa` with a longer full stage (so it keeps at least
5 checkpoints), with an EMA of the weights kept during that stage, then runs `swa.py` (top 5 by
valid mAP, BatchNorm re-estimated) and prints the comparison table that swa.py wrote into report.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--full-epochs", type=int, default=8)
    parser.add_argument("--ema-decay", type=float, default=0.99)
    args = parser.parse_args()
    py = sys.executable
    subprocess.run([py, "-m", "mlic.demo", "--out", args.data], check=True)
    env = dict(os.environ, ROOT_PATH=args.data)
    sets = [
        "--set",
        "experiment_name=demo_swa",
        "--set",
        f"stages.full.epochs={args.full_epochs}",
        "--set",
        "swa.top_k=5",
        "--set",
        f"swa.ema_decay={args.ema_decay}",
    ]
    start = time.time()
    subprocess.run([py, "train.py", "configs/demo.py", *sets], check=True, env=env)
    train_s = time.time() - start
    start = time.time()
    subprocess.run([py, "swa.py", "configs/demo.py", *sets], check=True, env=env)
    swa_s = time.time() - start
    report = (Path("experiments/demo_swa") / "report.md").read_text()
    section = report[report.index("## Checkpoint averaging (SWA)") :]
    print(f"\ntrain.py {train_s:.0f} s, swa.py {swa_s:.0f} s\n")
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
