"""Quality of the LR range test's suggestions on the real-data suite, against a grid of fixed LRs.

For each data set of `bench/suite.py` and each of four scenarios, one LR range test runs on the
scenario's starting weights; every rule's suggestion is read off its curve (and the previous default,
`minimum` over a beta=0.98 trailing average, from the same raw losses); then the stage is trained at
each suggested LR and at each LR of a fixed grid (six points across three decades), all for the same
epochs, and the best valid mAP of each run is compared with the best grid point's.

Scenarios (OneCycleLR, mlic's default schedule, in all of them):
  head         frozen backbone pretrained on the *other* data set of the suite, head only, AdamW
  full         the whole network after the head stage (the best head run), backbone at 0.3x, AdamW
  scratch      the whole network from random weights, AdamW
  scratch-sgd  the whole network from random weights, SGD with Nesterov momentum 0.9

Results are kept in experiments/bench_suite/results.json as they come, so a rerun skips what is done.

Usage (from the repo root, after `make install`; the data sets are built on first use):
    .venv/bin/python bench/lr_suggestion.py [--datasets emoji icons] [--scenarios head full scratch scratch-sgd]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

import suite  # noqa: E402

from mlic import LRFinder, Stage  # noqa: E402
from mlic.engine.lr_curve import DEFAULT_RULE, RULES, signal, smooth, suggest
from mlic.train.range_tests import run_lr_find  # noqa: E402
from mlic.train.stages import run  # noqa: E402

OUT = Path("experiments/bench_suite")
EPOCHS = {"head": 4, "full": 6, "scratch": 6, "scratch-sgd": 6}
GRIDS = {"adamw": np.geomspace(1e-4, 1e-1, 6), "sgd": np.geomspace(1e-3, 1.0, 6)}
PRETRAIN_EPOCHS = 12
OLD = "old default"  # `minimum` over the trailing average mlic used before (beta=0.98)


def trailing_average(losses: np.ndarray, beta: float = 0.98) -> np.ndarray:
    out, avg = [], 0.0
    for i, value in enumerate(losses):
        avg = beta * avg + (1 - beta) * value
        out.append(avg / (1 - beta ** (i + 1)))
    return np.array(out)


def best_map(exp_dir: Path) -> float:
    return float(pd.read_csv(exp_dir / "metrics.csv")["valid/map"].max())


class Bench:
    def __init__(self) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        self.path = OUT / "results.json"
        self.results: dict[str, dict] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def save(self) -> None:
        self.path.write_text(json.dumps(self.results, indent=1))

    def pretrained(self, dataset: str) -> str:
        """A backbone trained from scratch on the other data set of the suite (the 'ImageNet' here)."""
        other = next(d for d in suite.DATASETS if d != dataset)
        name = f"suite_pretrain_{other}"
        path = Path("experiments") / name / "model.best.pth"
        if not path.is_file():
            config = suite.config(other, name, [Stage("full", epochs=PRETRAIN_EPOCHS, lr=2e-3)])
            start = time.time()
            run(config)
            self.results[f"pretrain/{other}"] = {"map": best_map(path.parent), "seconds": time.time() - start}
            self.save()
        return str(path)

    def scenario_config(self, dataset: str, scenario: str, name: str, lr) -> object:
        epochs = EPOCHS[scenario]
        if scenario == "head":
            stage = Stage("head", epochs=epochs, freeze_backbone=True, lr=lr)
            return suite.config(dataset, name, [stage], pretrained=self.pretrained(dataset))
        if scenario == "full":
            stage = Stage("full", epochs=epochs, lr=lr, backbone_lr_scale=0.3)
            return suite.config(dataset, name, [stage], checkpoint=self.head_model(dataset))
        optimizer = suite.sgd() if scenario == "scratch-sgd" else suite.adamw()
        return suite.config(dataset, name, [Stage("full", epochs=epochs, lr=lr)], optimizer=optimizer)

    def head_model(self, dataset: str) -> str:
        """The best run of the head scenario's grid: where the full scenario starts."""
        runs = {k: v for k, v in self.results.items() if k.startswith(f"{dataset}/head/fixed")}
        if len(runs) < len(GRIDS["adamw"]):
            self.scenario(dataset, "head")
            runs = {k: v for k, v in self.results.items() if k.startswith(f"{dataset}/head/fixed")}
        best = max(runs.values(), key=lambda r: r["map"])
        return str(Path(best["exp_dir"]) / "model.best.pth")

    def train(self, dataset: str, scenario: str, label: str, lr: float) -> dict:
        key = f"{dataset}/{scenario}/{label}"
        done = self.results.get(key)
        if done and Path(done["exp_dir"]).is_dir() and abs(done["lr"] - lr) <= 1e-9 * lr:
            return done  # trained at this LR already (a rule whose suggestion moved trains again)
        name = f"suite_{dataset}_{scenario}_{label.replace(' ', '_')}"
        start = time.time()
        exp_dir = run(self.scenario_config(dataset, scenario, name, float(lr))).exp_dir
        self.results[key] = {
            "lr": float(lr),
            "map": best_map(exp_dir),
            "seconds": time.time() - start,
            "exp_dir": str(exp_dir),
        }
        self.save()
        print(f"{key}: lr {lr:.2e} -> best valid mAP {self.results[key]['map']:.4f}", flush=True)
        return self.results[key]

    def range_test(self, dataset: str, scenario: str) -> dict:
        """The scenario's range test (run once) and every rule's suggestion read off its curve."""
        key = f"{dataset}/{scenario}/range test"
        if key not in self.results:
            name = f"suite_{dataset}_{scenario}_lr_find"
            config = self.scenario_config(dataset, scenario, name, LRFinder(progress=False))
            exp_dir = run_lr_find(config).exp_dir
            report = (exp_dir / "report.md").read_text().splitlines()
            row = next(line for line in report if line.startswith(("| head |", "| full |")))
            self.results[key] = {"seconds": float(row.split("|")[3]), "exp_dir": str(exp_dir)}
        test = self.results[key]
        curve = pd.read_csv(Path(test["exp_dir"]) / "lr_finder.csv")
        lrs, raw = curve["lr"].to_numpy(), curve["loss"].to_numpy()
        smoothed = smooth(lrs, raw, LRFinder().window)
        noise = signal(lrs, raw, smoothed).noise  # the `edge` rule reads how far the bottom reaches by it
        test["suggestions"] = {rule: suggest(lrs, smoothed, rule, noise) for rule in RULES}
        test["suggestions"][OLD] = suggest(lrs, trailing_average(raw), "minimum")
        finite = np.isfinite(smoothed)
        lowest = float(lrs[finite][int(np.argmin(smoothed[finite]))])
        test.update(steps=len(curve), first_loss=float(raw[0]), lowest=lowest)
        self.save()
        return test

    def scenario(self, dataset: str, scenario: str) -> None:
        grid = GRIDS["sgd" if scenario == "scratch-sgd" else "adamw"]
        for lr in grid:
            self.train(dataset, scenario, f"fixed {lr:.1e}", lr)
        test = self.range_test(dataset, scenario)
        for rule, lr in test["suggestions"].items():
            if lr is not None:
                self.train(dataset, scenario, rule, lr)


def tables(results: dict, datasets: list[str], scenarios: list[str]) -> str:
    rules = [DEFAULT_RULE, *(r for r in RULES if r != DEFAULT_RULE), OLD]
    lines = [
        "| data set | scenario | range test (s) | best fixed LR: valid mAP | "
        + " | ".join(f"`{r}`" if r != OLD else r for r in rules)
        + " |",
        "|---" * (4 + len(rules)) + "|",
    ]
    grid_lines = []
    ratios: dict[str, list[float]] = {r: [] for r in rules}
    for dataset in datasets:
        for scenario in scenarios:
            prefix = f"{dataset}/{scenario}/"
            fixed = {k[len(prefix) + 6 :]: v for k, v in results.items() if k.startswith(prefix + "fixed ")}
            test = results.get(prefix + "range test")
            if not fixed or test is None:
                continue
            best_label, best = max(fixed.items(), key=lambda kv: kv[1]["map"])
            cells = []
            for rule in rules:
                r = results.get(prefix + rule)
                if r is None:
                    cells.append("—")
                    continue
                ratio = r["map"] / best["map"]
                ratios[rule].append(ratio)
                cells.append(f"{r['lr']:.1e}: {r['map']:.4f} ({ratio:.1%})")
            lines.append(
                f"| {dataset} | {scenario} | {test['seconds']:.0f} | {best_label}: {best['map']:.4f} | "
                + " | ".join(cells)
                + " |"
            )
            grid_lines.append(
                f"| {dataset} | {scenario} | "
                + " | ".join(
                    f"{k}: {v['map']:.4f}" for k, v in sorted(fixed.items(), key=lambda kv: kv[1]["lr"])
                )
                + " |"
            )
    summary = ["", "| rule | scenarios | worst | mean | scenarios at ≥ 95% |", "|---|---|---|---|---|"]
    for rule in rules:
        values = ratios[rule]
        if values:
            summary.append(
                f"| {rule} | {len(values)} | {min(values):.1%} | {np.mean(values):.1%} | "
                f"{sum(v >= 0.95 for v in values)} of {len(values)} |"
            )
    grid = [
        "",
        "| data set | scenario | " + " | ".join(f"fixed LR {i + 1}: best valid mAP" for i in range(6)) + " |",
        "|---" * 8 + "|",
        *grid_lines,
    ]
    return "\n".join(lines + summary + grid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["emoji", "icons"], choices=list(suite.DATASETS))
    parser.add_argument("--scenarios", nargs="+", default=list(EPOCHS), choices=list(EPOCHS))
    parser.add_argument("--fresh", action="store_true", help="forget earlier results and start over")
    args = parser.parse_args()
    suite.quiet()
    if args.fresh and OUT.exists():
        shutil.rmtree(OUT)
    bench = Bench()
    for dataset in args.datasets:
        for scenario in args.scenarios:
            bench.scenario(dataset, scenario)
            print(tables(bench.results, args.datasets, args.scenarios), flush=True)
    print("\n" + tables(bench.results, args.datasets, args.scenarios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
