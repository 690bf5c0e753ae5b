"""Quality of the LR range test's suggestion on the demo dataset.

Trains the demo's head stage once, runs the LR range test for the `full` stage from that model, then
trains the `full` stage from that model several times at the same epochs: with the LR each suggestion
rule reads off the curve, and with each LR of a fixed grid. Prints the best
valid mAP of each run and the ratio suggestion / best-of-grid as Markdown rows for bench/RESULTS.md.

Usage (from the repo root, after `make install`):
    .venv/bin/python bench/lr_suggestion.py [--data data/demo] [--epochs 3] [--grid 1e-4 3e-4 1e-3 3e-3 1e-2]
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import subprocess
import sys
import time

import pandas as pd

from mlic import Stage, load_config
from mlic.lr_finder import RULES, suggest
from mlic.stages import run


def best_map(exp_name: str) -> float:
    return float(pd.read_csv(f"experiments/{exp_name}/metrics.csv")["valid/map"].max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--grid", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    subprocess.run([sys.executable, "-m", "mlic.demo", "--out", args.data], check=True)
    os.environ["ROOT_PATH"] = args.data
    base = load_config("configs/demo.py")
    base.trainer = dict(base.trainer, enable_progress_bar=False, enable_model_summary=False)
    head_stage = next(s for s in base.resolved_stages() if s.freeze_backbone)
    full_stage = next(s for s in base.resolved_stages() if not s.freeze_backbone)

    head = copy.deepcopy(base)
    head.experiment_name = "bench_lr_head"
    head.stages = [Stage("head", epochs=head_stage.epochs, freeze_backbone=True, lr=3e-3)]
    run(head)

    def full(name: str, lr) -> tuple[float, float]:
        config = copy.deepcopy(base)
        config.experiment_name = name
        config.model.pretrained = False
        config.model.checkpoint = "experiments/bench_lr_head/model.best.pth"
        config.stages = [
            Stage("full", epochs=args.epochs, lr=lr, backbone_lr_scale=full_stage.backbone_lr_scale)
        ]
        start = time.time()
        run(config)
        return best_map(name), time.time() - start

    curve_config = copy.deepcopy(base)
    curve_config.experiment_name = "bench_lr_curve"
    curve_config.model.pretrained = False
    curve_config.model.checkpoint = "experiments/bench_lr_head/model.best.pth"
    curve_config.stages = [Stage("full", epochs=1, backbone_lr_scale=full_stage.backbone_lr_scale)]
    run(curve_config, lr_find=True)
    curve = pd.read_csv("experiments/bench_lr_curve/lr_finder.csv")
    suggestions = {rule: suggest(curve["lr"], curve["smoothed_loss"], rule) for rule in RULES}

    rows = []
    for rule, lr in suggestions.items():
        value, seconds = full(f"bench_lr_{rule}", lr)
        rows.append((f"suggested by `{rule}`: {lr:.2e}", value, seconds))
    for lr in args.grid:
        value, seconds = full(f"bench_lr_{lr:g}", lr)
        rows.append((f"fixed {lr:g}", value, seconds))
    best_grid = max(v for name, v, _ in rows if name.startswith("fixed"))
    print(f"\n| full-stage head LR | best valid mAP ({args.epochs} epochs) | wall time (s) |")
    print("|---|---|---|")
    for name, value, seconds in rows:
        print(f"| {name} | {value:.4f} | {seconds:.0f} |")
    print()
    for name, value, _ in rows:
        if name.startswith("suggested"):
            print(
                f"{name} reaches {value / best_grid:.1%} of the best fixed LR's valid mAP ({best_grid:.4f})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
