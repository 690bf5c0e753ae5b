"""Does mlic's recommended recipe beat the loop a user writes in an afternoon? On the real-data suite,
over seeds, from scratch and from a pretrained backbone, with an ablation of each ingredient.

Two scenarios, the same epoch budget on both sides (`--epochs`, default 6):
  scratch     `resnet10t` from random weights
  pretrained  `resnet10t` from a backbone trained on another set of the suite (12 epochs from scratch
              at 2e-3: icons for emoji, emoji for icons and pokemon), a new head
The plain loop is `bench/parity.py`'s hand-written loop (AdamW lr 2e-3, weight decay 1e-2, OneCycleLR,
flips, images decoded once), the whole network trained for the budget, the best-valid-mAP epoch shipped.
mlic runs the recipe README recommends (`recipe` below, `configs/simple_config.py`) in both scenarios,
the best-valid-mAP model shipped: the whole network for the budget at the LR of its range test (100
steps before training, not counted in the budget), BCE, flips, a prior-initialised head.

The ablation (`--ablation`) switches one ingredient of the recipe at a time (`VARIANTS`), in the
pretrained scenario, and reports its change in test mAP against the recipe, its seed spread and its
time. `swa` and `ema` score the averaged model of the recipe's own runs, `tuned thresholds` the recipe's
F1 with and without the thresholds tuned on valid: they cost no run of their own.

`--flat` records the range test of a from-scratch `resnet18` at 96×96 on the pokemon set (100 steps that
do not move the loss: the suite's flat scenario) into tests/fixtures/lr_range_flat.csv.

Results are kept in experiments/bench_recipe/results.json as they come, so a rerun trains only what
is missing. Usage (from the repo root, after `make install` and `pip install -e ".[bench]"`):
    .venv/bin/python bench/recipe.py [--datasets emoji icons pokemon] [--seeds 0 1 2] [--epochs 6]
    .venv/bin/python bench/recipe.py --ablation --datasets icons
    .venv/bin/python bench/recipe.py --flat
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))

import parity  # noqa: E402
import suite  # noqa: E402

from mlic import SWA, LRFinder, Stage, losses  # noqa: E402
from mlic.config.schema import Config  # noqa: E402
from mlic.evaluate.evaluation import evaluate_split  # noqa: E402
from mlic.train.stages import run  # noqa: E402
from mlic.train.swa import run_swa  # noqa: E402
from mlic.utils.errors import CheckpointError  # noqa: E402

OUT = Path("experiments/bench_recipe")
DATASETS = ["emoji", "icons", "pokemon"]
PRETRAIN_FROM = {"emoji": "icons", "icons": "emoji", "pokemon": "emoji"}
PRETRAIN_EPOCHS = 12
LR = 2e-3

# the stronger augmentation policies the ablation compares with flips alone
COURSE_AUGMENT = A.Compose(  # configs/base.py's train_augmentations
    [
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10), p=0.5),
        A.RandomBrightnessContrast(p=0.3),
        A.HueSaturationValue(p=0.3),
    ]
)
GEOMETRIC_AUGMENT = A.Compose(  # flips and small affine moves, no colour change
    [
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10), p=0.5),
    ]
)
TRIVIAL_AUGMENT = A.Compose(  # TrivialAugment's idea: one op of a standard list, at a random strength
    [
        A.HorizontalFlip(p=0.5),
        A.OneOf(
            [
                A.Affine(rotate=(-30, 30), p=1),
                A.Affine(shear=(-17, 17), p=1),
                A.Affine(translate_percent=(-0.3, 0.3), p=1),
                A.RandomBrightnessContrast(brightness_limit=0.9, contrast_limit=0.9, p=1),
                A.ColorJitter(brightness=0, contrast=0, saturation=0.9, hue=0, p=1),
                A.Sharpen(p=1),
                A.Posterize(num_bits=(4, 8), p=1),
                A.Solarize(p=1),
                A.Equalize(p=1),
                A.NoOp(p=1),
            ],
            p=1,
        ),
    ]
)


def recipe(config: Config, epochs: int) -> Config:
    """The recommended recipe on a suite config, as README tells a user to write it
    (`configs/simple_config.py`): one stage over the whole network at the LR of its range test, BCE,
    flips, and what mlic adds to any run (a prior-initialised head, no weight decay on norms and biases).
    It is also the ablation's starting point: each ingredient of `VARIANTS` changes one thing of it, and
    none of them paid (bench/RESULTS.md)."""
    config.data.augmentations = A.HorizontalFlip(p=0.5)
    config.loss = torch.nn.BCEWithLogitsLoss()
    config.stages = [Stage("full", epochs=epochs, lr="find")]
    config.save_top_k = 3
    config.swa = SWA(top_k=3, ema_decay=0.99)  # kept for the `swa` and `ema` rows; the best model ships
    return config


def staged(config: Config) -> None:
    """The course's staging: the head on the frozen backbone for a third of the budget, then the whole
    network with the backbone at 0.3x the head's LR, each stage at its own range test's LR."""
    epochs = sum(s.epochs for s in config.stages)
    head = max(1, epochs // 3)
    config.stages = [
        Stage("head", epochs=head, freeze_backbone=True, lr="find"),
        Stage("full", epochs=epochs - head, lr="find", backbone_lr_scale=0.3),
    ]


def _stages(config: Config, **changes) -> list[Stage]:
    return [replace(s, **changes) for s in config.stages]


# ingredient -> (what it is, how it changes the recipe's config)
VARIANTS: dict[str, tuple[str, Callable[[Config], None]]] = {
    "fixed LR": (
        "no range test: every stage at the optimizer's lr 2e-3 (the plain loop's)",
        lambda c: setattr(c, "stages", _stages(c, lr=LR)),
    ),
    "edge rule": (
        "every range test read by the `edge` rule (the high end of the flat bottom) instead of `near_minimum`",
        lambda c: setattr(c, "stages", _stages(c, lr=LRFinder(suggestion="edge", progress=False))),
    ),
    "staged": (
        "the head on the frozen backbone for a third of the budget, then the whole network at 0.3x for the backbone",
        staged,
    ),
    "label smoothing": (
        "loss: LabelSmoothingBCE(smoothing=0.1)",
        lambda c: setattr(c, "loss", losses.LabelSmoothingBCE(smoothing=0.1)),
    ),
    "geometric augmentation": (
        "augmentation: flips and small affine moves (scale 0.9-1.1, shift 5%, rotation 10 degrees), no colour",
        lambda c: setattr(c.data, "augmentations", GEOMETRIC_AUGMENT),
    ),
    "course augmentation": (
        "augmentation: configs/base.py's (flips, affine, brightness/contrast, hue/saturation)",
        lambda c: setattr(c.data, "augmentations", COURSE_AUGMENT),
    ),
    "TrivialAugment": (
        "augmentation: flips and one of ten standard ops at a random strength (TrivialAugment-style)",
        lambda c: setattr(c.data, "augmentations", TRIVIAL_AUGMENT),
    ),
    "2x epochs": (
        "twice the epochs in every stage",
        lambda c: setattr(c, "stages", [replace(s, epochs=2 * s.epochs) for s in c.stages]),
    ),
    "ASL": (
        "loss: AsymmetricLoss(gamma_neg=4, gamma_pos=0, clip=0.05)",
        lambda c: setattr(c, "loss", losses.AsymmetricLoss(gamma_pos=0.0, gamma_neg=4.0, clip=0.05)),
    ),
    "focal": (
        "loss: FocalLoss(alpha=0.25, gamma=2)",
        lambda c: setattr(c, "loss", losses.FocalLoss(alpha=0.25, gamma=2.0)),
    ),
    "no prior head": (
        "the new head keeps timm's initialisation",
        lambda c: setattr(c.model, "prior_init", False),
    ),
}


# ------------------------------------------------------------------------------------------- runners


def pretrained_backbone(dataset: str) -> str:
    """A backbone trained from scratch on another set of the suite (the 'ImageNet' of this bench)."""
    other = PRETRAIN_FROM[dataset]
    name = f"suite_pretrain_{other}"
    path = Path("experiments") / name / "model.best.pth"
    if not path.is_file():
        run(suite.config(other, name, [Stage("full", epochs=PRETRAIN_EPOCHS, lr=LR)]))
    return str(path)


def plain_loop(dataset: str, seed: int, epochs: int, init: str | None) -> dict[str, float]:
    """parity.py's hand-written loop, from random weights or from `init`'s backbone (a new head)."""
    return parity.plain_loop(Path(suite.ensure_data(dataset)), seed, epochs, init)


def stage_maps(exp_dir: Path) -> dict[str, float]:
    """Best valid mAP and the first epoch's valid loss of each stage, from metrics.csv."""
    df = pd.read_csv(exp_dir / "metrics.csv")
    out = {}
    for stage, g in df.groupby("stage", sort=False):
        out[f"{stage}/valid_map"] = float(g["valid/map"].max())
        out[f"{stage}/first_valid_loss"] = float(g["valid/loss"].iloc[0])
        out[f"{stage}/last_valid_loss"] = float(g["valid/loss"].iloc[-1])
    return out


def mlic_run(dataset: str, seed: int, epochs: int, scenario: str, variant: str) -> dict[str, float]:
    """The recipe (or one ingredient switched) through train.py's path; the shipped model's metrics."""
    pretrained = pretrained_backbone(dataset) if scenario == "pretrained" else False
    name = f"recipe_{dataset}_{scenario}_{seed}" + (
        "" if variant == "recipe" else f"_{variant.replace(' ', '_')}"
    )
    config = recipe(suite.config(dataset, name, [], pretrained=pretrained, seed=seed), epochs)
    config.trainer["enable_progress_bar"] = False
    if variant != "recipe":
        VARIANTS[variant][1](config)
    result = run(config)
    test, exp_dir = result.results["test"], result.exp_dir
    out = {
        "valid": float(result.results["valid"]["map"]),
        "test": float(test["map"]),
        "f1_macro": float(test["f1_macro"]),
        "f1_macro_tuned": float(test.get("f1_macro_tuned", np.nan)),
        **stage_maps(exp_dir),
        **{f"lr/{k}": v.suggestion for k, v in result.range_tests.items()},
    }
    if variant == "recipe":  # the averaged models of the same run: no training of their own
        if (exp_dir / "model.ema.pth").is_file():
            out["ema"] = float(evaluate_split(config, "test", "model.ema.pth").results["test"]["map"])
        try:
            out["swa"] = float(run_swa(config).results["swa/test"]["map"])
        except CheckpointError:  # a full stage too short to keep two checkpoints
            out["swa"] = float("nan")
    return out


# ------------------------------------------------------------------------------------------- tables


class Results:
    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "results.json"
        self.cells: dict[str, dict] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, key: str, make: Callable[..., dict[str, float]], *args) -> dict[str, float]:
        """The cell `key`, measured by `make(*args)` when it is not there yet (in this process or another)."""
        if self.path.is_file():
            self.cells = json.loads(self.path.read_text())
        if key not in self.cells:
            start = time.time()
            cell = {**make(*args), "seconds": time.time() - start}
            # merged into what is on disk: several runs of this bench may fill one file at once
            self.cells = (
                {**json.loads(self.path.read_text()), key: cell} if self.path.is_file() else {key: cell}
            )
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.cells, indent=1))
            os.replace(tmp, self.path)
            print(key, self.cells[key], flush=True)
        return self.cells[key]


def mean_sd(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "—"
    sd = np.std(values, ddof=1) if len(values) > 1 else float("nan")
    return f"{np.mean(values):.4f} ± {sd:.4f}"


def per_seed(cells: list[dict]) -> str:
    return ", ".join(f"{c['test']:.4f}" for c in cells)


def recipe_table(results: Results, datasets: list[str], seeds: list[int], epochs: int) -> None:
    print(
        "\n| data set | scenario | plain loop: test mAP per seed | mean ± sd | mlic recipe: test mAP per seed "
        "| mean ± sd | mlic − plain (relative) | seconds per run, plain / mlic |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for dataset in datasets:
        for scenario in ("scratch", "pretrained"):
            keys = [f"{dataset}/{scenario}/{s}/" for s in seeds]
            keys = [k for k in keys if k + "plain loop" in results.cells and k + "recipe" in results.cells]
            if not keys:
                continue
            plain = [results.cells[k + "plain loop"] for k in keys]
            ours = [results.cells[k + "recipe"] for k in keys]
            p, m = np.mean([r["test"] for r in plain]), np.mean([r["test"] for r in ours])
            diffs = [b["test"] - a["test"] for a, b in zip(plain, ours)]
            print(
                f"| {dataset} | {scenario} | {per_seed(plain)} | "
                f"{mean_sd([r['test'] for r in plain])} | {per_seed(ours)} | "
                f"{mean_sd([r['test'] for r in ours])} | {m - p:+.4f} ({(m - p) / p:+.1%}; per seed "
                f"{', '.join(f'{d:+.4f}' for d in diffs)}) | "
                f"{np.mean([r['seconds'] for r in plain]):.0f} / {np.mean([r['seconds'] for r in ours]):.0f} |"
            )
    print("\nStaged runs, best valid mAP of the head stage → the full stage, and the range tests' LRs:")
    for key, r in results.cells.items():
        if "head/valid_map" in r:
            print(
                f"- {key}: head {r['head/valid_map']:.4f} → full {r['full/valid_map']:.4f}; first full-epoch "
                f"valid loss {r['full/first_valid_loss']:.4f} against the head's last {r['head/last_valid_loss']:.4f}; "
                f"LRs {r.get('lr/head')}, {r.get('lr/full')}"
            )


def ablation_table(
    results: Results, dataset: str, scenario: str, seeds: list[int], variants: list[str]
) -> None:
    """The ablation's rows, each over the seeds it has so far, paired with the recipe on the same seeds."""
    cells = results.cells
    start = {
        s: cells[f"{dataset}/{scenario}/{s}/recipe"]
        for s in seeds
        if f"{dataset}/{scenario}/{s}/recipe" in cells
    }
    print(
        f"\n| ingredient (on {dataset}, {scenario}) | what changes | test mAP per seed | mean ± sd | change vs the "
        "recipe, paired by seed (sd) | seconds per run |"
    )
    print("|---|---|---|---|---|---|")
    ref = [start[s]["test"] for s in start]
    print(
        f"| the recipe | one stage at the range test's LR, BCE, flips, prior-initialised head | "
        f"{', '.join(f'{v:.4f}' for v in ref)} | "
        f"{mean_sd(ref)} | | {np.mean([r['seconds'] for r in start.values()]):.0f} |"
    )
    rows = [
        (name, VARIANTS[name][0], {s: cells.get(f"{dataset}/{scenario}/{s}/{name}") for s in start})
        for name in variants
    ]
    rows += [
        (
            "SWA",
            "swa.py's average of the top 3 checkpoints, BatchNorm re-estimated",
            {s: {"test": r["swa"]} for s, r in start.items()},
        ),
        (
            "EMA",
            "the EMA of the weights (decay 0.99)",
            {s: {"test": r.get("ema", np.nan)} for s, r in start.items()},
        ),
    ]
    for name, text, by_seed in rows:
        done = {s: c for s, c in by_seed.items() if c is not None}
        if not done:
            continue
        values = [c["test"] for c in done.values()]
        diff = [c["test"] - start[s]["test"] for s, c in done.items()]
        sd = f"{np.std(diff, ddof=1):.4f}" if len(diff) > 1 else "one seed"
        seconds = [c["seconds"] for c in done.values() if "seconds" in c]
        print(
            f"| {name} | {text} | {', '.join(f'{v:.4f}' for v in values)} | {mean_sd(values)} | "
            f"{np.mean(diff):+.4f} ({sd}) | {f'{np.mean(seconds):.0f}' if seconds else '—'} |"
        )
    f1 = [r["f1_macro"] for r in start.values()]
    tuned = [r["f1_macro_tuned"] for r in start.values()]
    print(
        f"\nThresholds: test macro F1 at 0.5 {mean_sd(f1)}, tuned on valid {mean_sd(tuned)} "
        f"(paired change {np.mean(np.subtract(tuned, f1)):+.4f})"
    )


def flat_curve() -> None:
    """The suite's flat scenario: a from-scratch resnet18 at 96×96, whose 100 range-test steps do not move the loss."""
    config = suite.config(
        "pokemon", "recipe_flat", [Stage("full", epochs=1)], lr_finder=LRFinder(progress=False)
    )
    config.model = replace(config.model, name="resnet18")
    config.data.img_size = (96, 96)
    test = run(config).range_tests["full"]
    print(f"signal: {test.signal}, ratio {test.signal.ratio:.2f}, suggestion {test.suggestion}")
    out = Path("tests/fixtures/lr_range_flat.csv")
    test.to_frame().to_csv(out, index=False)
    print(f"wrote {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument(
        "--ablation", action="store_true", help="the ingredient ablation instead of the recipe table"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        help="ablation: the ingredients",
    )
    parser.add_argument(
        "--scenarios", nargs="+", default=["scratch", "pretrained"], choices=["scratch", "pretrained"]
    )
    parser.add_argument("--out", default=str(OUT), help=f"where results.json is kept (default {OUT})")
    parser.add_argument("--plain", action="store_true", help="only the plain loop's cells")
    parser.add_argument(
        "--report", action="store_true", help="print the tables of what is measured; train nothing"
    )
    parser.add_argument("--flat", action="store_true", help="record the flat range-test curve and stop")
    args = parser.parse_args()
    suite.quiet()
    logging.getLogger("mlic").setLevel(logging.WARNING)
    if args.flat:
        flat_curve()
        return 0
    results = Results(Path(args.out))
    for dataset in [] if args.report else args.datasets:
        for seed in args.seeds:
            random.seed(seed)
            for scenario in args.scenarios:
                init = pretrained_backbone(dataset) if scenario == "pretrained" else None
                key = f"{dataset}/{scenario}/{seed}"
                if args.plain or not args.ablation:
                    results.get(f"{key}/plain loop", plain_loop, dataset, seed, args.epochs, init)
                if args.plain:
                    continue
                results.get(f"{key}/recipe", mlic_run, dataset, seed, args.epochs, scenario, "recipe")
                for variant in args.variants if args.ablation else []:
                    results.get(f"{key}/{variant}", mlic_run, dataset, seed, args.epochs, scenario, variant)
    if args.ablation:
        for dataset in args.datasets:
            for scenario in args.scenarios:
                ablation_table(results, dataset, scenario, args.seeds, args.variants)
    else:
        recipe_table(results, args.datasets, args.seeds, args.epochs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
