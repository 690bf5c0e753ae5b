"""The demo staged (as the course: a head stage on the frozen backbone, then the whole network) against
the measured recipe (one stage over the whole network at its range test's LR), the same 6 epochs, three
seeds; test mAP of the model each ships (model.best.pth).

Usage (from the repo root, after `make install` and `python -m mlic.demo --out data/demo`):
    OMP_NUM_THREADS=1 .venv/bin/python bench/demo_recipe.py [--data data/demo] [--seeds 0 1 2]

Each run is `train.py` on configs/demo.py (staged) or on a config that replaces its stages (written to
experiments/bench_demo_onestage_config.py), with `--set` seed and name, its experiment named
`bench_demo_<variant>_<seed>`; a run whose experiment already has results.json is read, not repeated.
Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# the recipe: configs/demo.py with one stage over the whole network at lr="find", the same 6 epochs
ONE_STAGE = """import dataclasses

from configs.demo import config as base
from mlic import Stage

config = dataclasses.replace(base, stages=[Stage("full", epochs=6, lr="find")])
"""
CONFIGS = {"staged": "configs/demo.py", "onestage": "experiments/bench_demo_onestage_config.py"}


def run(data: str, variant: str, seed: int) -> float:
    name = f"bench_demo_{variant}_{seed}"
    results = Path("experiments") / name / "results.json"
    if not results.is_file():
        command = [sys.executable, "train.py", CONFIGS[variant], "--set", f"seed={seed}"]
        command += ["--set", f"experiment_name={name}", "--set", "data.num_workers=0"]
        command += ["--set", "trainer.enable_progress_bar=False"]
        env = dict(os.environ, ROOT_PATH=data, PYTHONPATH=os.getcwd())  # the variant imports configs.demo
        subprocess.run(command, check=True, env=env)
    return json.loads(results.read_text())["models"]["best"]["test"]["map"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    Path(CONFIGS["onestage"]).parent.mkdir(exist_ok=True)
    Path(CONFIGS["onestage"]).write_text(ONE_STAGE)
    scores = {v: [run(args.data, v, s) for s in args.seeds] for v in CONFIGS}
    print("| variant | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
    print("|---|" + "---|" * (len(args.seeds) + 1))
    for variant, values in scores.items():
        cells = " | ".join(f"{v:.4f}" for v in values)
        print(f"| {variant} | {cells} | {statistics.mean(values):.4f} |")
    staged, one = statistics.mean(scores["staged"]), statistics.mean(scores["onestage"])
    print(f"\none stage against staged: {one - staged:+.4f} test mAP ({100 * (one / staged - 1):+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
