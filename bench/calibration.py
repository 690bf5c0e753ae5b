"""Calibration on the real-data suite: ECE on test before and after temperature (and Platt) scaling fitted
on valid, and what it does to test mAP and tuned macro F1.

Usage (from the repo root, after `bench/recipe.py` trained its experiments):
    .venv/bin/python bench/calibration.py [--experiments 'experiments/recipe_*_base']

For each experiment folder matching the pattern it reads `model.best.pth`, predicts valid and test once,
fits each calibration on valid (never on test), and measures on test: the mean per-class ECE (15 bins),
mAP, and macro F1 at per-class thresholds tuned on valid (raw thresholds on raw valid probabilities,
calibrated ones on calibrated probabilities). Prints one Markdown row per experiment and a mean per
data set, for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import glob
import re
from pathlib import Path

import numpy as np

from mlic import Config, Data, Model
from mlic.data.loaders import make_loader
from mlic.data.tables import read_splits
from mlic.evaluate.evaluation import eval_module, evaluate
from mlic.experiment.checkpoints import load_model_file
from mlic.metrics.calibration import expected_calibration_error, fit_calibration
from mlic.metrics.classification import f1_at, mean_average_precision, tune_thresholds

NAME = re.compile(r"recipe_(?P<data>\w+?)_(?P<scenario>pretrained|scratch)_(?P<seed>\d+)_base$")


def outputs_of(exp_dir: Path, data: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Valid and test probabilities and targets of the experiment's best model."""
    mf = load_model_file(exp_dir / "model.best.pth")
    cfg = Data(
        root=f"data/{data}", image_pattern="{id}.png", img_size=mf.prep.img_size, batch_size=64, num_workers=1
    )
    tables = read_splits(cfg)
    loaders = {s: make_loader(tables[s], mf.prep.transform(), cfg, train=False) for s in ("valid", "test")}
    config = Config(
        experiment_name="calibration", data=cfg, model=Model(name=mf.model_name, pretrained=False)
    )
    config.trainer = {"accelerator": "cpu", "enable_progress_bar": False}
    return evaluate(eval_module(mf.model, config), config, loaders, ["valid", "test"]).outputs


def measure(outputs: dict, method: str | None) -> dict[str, float]:
    (pv, tv), (pt, tt) = outputs["valid"], outputs["test"]
    if method is not None:
        calibration = fit_calibration(pv, tv, method, softmax=False)
        pv, pt = calibration.apply(pv, False), calibration.apply(pt, False)
    thresholds = tune_thresholds(pv, tv, 0.5)
    return {
        "ece": expected_calibration_error(pt, tt)[1],
        "map": mean_average_precision(pt, tt),
        "f1_tuned": f1_at(pt, tt, thresholds)["f1_macro"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", default="experiments/recipe_*_base")
    args = parser.parse_args()
    rows = []
    print(
        "| data set | scenario | seed | test ECE raw | temperature | Platt | test mAP raw → temperature | tuned macro F1 raw → temperature → Platt |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for folder in sorted(glob.glob(args.experiments)):
        match = NAME.search(folder)
        if not match or not Path(folder, "model.best.pth").is_file():
            continue
        outputs = outputs_of(Path(folder), match["data"])
        raw, temp, platt = (measure(outputs, m) for m in (None, "temperature", "platt"))
        rows.append((match["data"], match["scenario"], raw, temp, platt))
        print(
            f"| {match['data']} | {match['scenario']} | {match['seed']} | {raw['ece']:.4f} | {temp['ece']:.4f} | "
            f"{platt['ece']:.4f} | {raw['map']:.4f} → {temp['map']:.4f} | "
            f"{raw['f1_tuned']:.4f} → {temp['f1_tuned']:.4f} → {platt['f1_tuned']:.4f} |",
            flush=True,
        )
    print(
        "\n| data set | scenario | runs | test ECE raw | temperature | Platt | Δ mAP | Δ tuned macro F1 (temperature, Platt) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for key in sorted({(r[0], r[1]) for r in rows}):
        group = [r for r in rows if (r[0], r[1]) == key]

        def mean(i: int, k: str, group: list = group) -> float:
            return float(np.mean([g[i][k] for g in group]))

        print(
            f"| {key[0]} | {key[1]} | {len(group)} | {mean(2, 'ece'):.4f} | {mean(3, 'ece'):.4f} | "
            f"{mean(4, 'ece'):.4f} | {mean(3, 'map') - mean(2, 'map'):+.4f} | "
            f"{mean(3, 'f1_tuned') - mean(2, 'f1_tuned'):+.4f}, {mean(4, 'f1_tuned') - mean(2, 'f1_tuned'):+.4f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
