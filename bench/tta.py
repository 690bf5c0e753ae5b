"""Test-time augmentation on the real-data suite: test mAP and tuned macro F1 with the mirror view
averaged in (as probabilities, mlic's way, and as logits), against one view, and what it costs.

Usage (from the repo root, after `bench/recipe.py` trained its experiments):
    .venv/bin/python bench/tta.py [--experiments 'experiments/recipe_*_base']

For each experiment folder matching the pattern it predicts valid and test with `model.best.pth`
(no training), once per way, tunes per-class thresholds on that way's valid predictions, and measures
on test; images/s is the model's throughput on test (batch 64, this machine's CPU threads).
"""

from __future__ import annotations

import argparse
import glob
import re
import time
from pathlib import Path

import numpy as np
import torch

from mlic import Data
from mlic.data.loaders import make_loader
from mlic.data.tables import read_splits
from mlic.experiment.checkpoints import load_model_file
from mlic.metrics.classification import f1_at, mean_average_precision, tune_thresholds
from mlic.models.tta import flip_views

NAME = re.compile(r"recipe_(?P<data>\w+?)_(?P<scenario>pretrained|scratch)_(?P<seed>\d+)_base$")
WAYS = ("one view", "hflip, probabilities", "hflip, logits")


def predict(model: torch.nn.Module, loader, way: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(probabilities, targets, images per second) of one split."""
    probs, targets, seconds, count = [], [], 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            start = time.perf_counter()
            if way == "one view":
                logits = model(x)
            elif way == "hflip, probabilities":
                logits = flip_views(model, x, softmax=False, pixelwise=False)
            else:
                logits = (model(x) + model(torch.flip(x, [-1]))) / 2
            seconds += time.perf_counter() - start
            count += len(x)
            probs.append(torch.sigmoid(logits).numpy())
            targets.append(y.numpy())
    return np.concatenate(probs), np.concatenate(targets), count / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", default="experiments/recipe_*_base")
    args = parser.parse_args()
    rows = []
    print("| data set | scenario | seed | way | test mAP | tuned macro F1 | images/s |")
    print("|---|---|---|---|---|---|---|")
    for folder in sorted(glob.glob(args.experiments)):
        match = NAME.search(folder)
        if not match or not Path(folder, "model.best.pth").is_file():
            continue
        mf = load_model_file(Path(folder) / "model.best.pth")
        cfg = Data(
            root=f"data/{match['data']}", image_pattern="{id}.png", img_size=mf.prep.img_size, num_workers=0
        )
        tables = read_splits(cfg)
        loaders = {
            s: make_loader(tables[s], mf.prep.transform(), cfg, train=False) for s in ("valid", "test")
        }
        model = mf.model.eval()
        for way in WAYS:
            pv, tv, _ = predict(model, loaders["valid"], way)
            pt, tt, speed = predict(model, loaders["test"], way)
            scores = (mean_average_precision(pt, tt), f1_at(pt, tt, tune_thresholds(pv, tv, 0.5))["f1_macro"])
            rows.append((match["data"], match["scenario"], way, *scores, speed))
            print(
                f"| {match['data']} | {match['scenario']} | {match['seed']} | {way} | {scores[0]:.4f} | "
                f"{scores[1]:.4f} | {speed:.0f} |",
                flush=True,
            )
    print("\n| data set | scenario | way | runs | test mAP | tuned macro F1 | images/s |")
    print("|---|---|---|---|---|---|---|")
    for key in sorted({(r[0], r[1]) for r in rows}):
        for way in WAYS:
            group = [r for r in rows if (r[0], r[1], r[2]) == (*key, way)]
            mean = np.mean([[g[3], g[4], g[5]] for g in group], axis=0)
            print(
                f"| {key[0]} | {key[1]} | {way} | {len(group)} | {mean[0]:.4f} | {mean[1]:.4f} | {mean[2]:.0f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
