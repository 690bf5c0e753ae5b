"""MixUp and CutMix against no mixing, at the same epochs, on the real-data suite and on the demo.

Real data (`--datasets`, built on first use): the suite's recipe (`bench/suite.py`: `resnet10t` from
random weights at 48×48, batch 64, AdamW lr 2e-3 with OneCycleLR, flips), one full stage of
`--epochs`, per seed; each run's best-valid-mAP epoch is scored on test. The demo (`--demo`):
`configs/demo.py` as shipped (range tests, head and full stages) with `Config.mixing` set.

Usage (from the repo root, after `make install`):
    .venv/bin/python bench/mixing.py [--datasets emoji] [--seeds 0 1 2] [--epochs 8] [--demo]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

import suite  # noqa: E402

from mlic import Mixing, Stage, load_config  # noqa: E402
from mlic.train.stages import run  # noqa: E402

LR = 2e-3
VARIANTS = {
    "none": None,
    "mixup": Mixing("mixup", p=1.0, alpha=0.4),
    "cutmix": Mixing("cutmix", p=1.0, alpha=1.0),
}


def scores(exp_dir: Path) -> dict[str, float]:
    valid = float(pd.read_csv(exp_dir / "metrics.csv")["valid/map"].max())
    return {"valid": valid, "test": suite.test_metrics(exp_dir)["map"]}


def suite_run(dataset: str, seed: int, epochs: int, variant: str) -> dict[str, float]:
    config = suite.config(
        dataset, f"mixing_{dataset}_{seed}_{variant}", [Stage("full", epochs=epochs, lr=LR)], seed=seed
    )
    config.mixing = VARIANTS[variant]
    return scores(run(config).exp_dir)


def demo_run(variant: str) -> dict[str, float]:
    if not Path("data/demo/train_df.csv").is_file():
        subprocess.run([sys.executable, "-m", "mlic.demo", "--out", "data/demo"], check=True)
    os.environ.setdefault("ROOT_PATH", "data/demo")
    config = load_config("configs/demo.py")
    config.experiment_name = f"mixing_demo_{variant}"
    config.trainer = dict(config.trainer, enable_progress_bar=False, enable_model_summary=False)
    config.mixing = VARIANTS[variant]
    return scores(run(config).exp_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=["emoji"], choices=list(suite.DATASETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--demo", action="store_true", help="also the demo config, once per variant")
    args = parser.parse_args()
    suite.quiet()
    rows = []
    for dataset in args.datasets:
        for seed in args.seeds:
            for variant in args.variants:  # alternating, so the machine's drift hits all alike
                start = time.perf_counter()
                result = suite_run(dataset, seed, args.epochs, variant)
                rows.append(
                    dict(data=dataset, seed=seed, variant=variant, s=time.perf_counter() - start, **result)
                )
                print(rows[-1], flush=True)
    if args.demo:
        for variant in args.variants:
            start = time.perf_counter()
            rows.append(
                dict(
                    data="demo", seed=42, variant=variant, s=time.perf_counter() - start, **demo_run(variant)
                )
            )
            rows[-1]["s"] = time.perf_counter() - start
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    print("\n| data set | mixing | test mAP per seed | mean ± sd | best valid mAP, mean | seconds per run |")
    print("|---|---|---|---|---|---|")
    for (dataset, variant), g in df.groupby(["data", "variant"], sort=False):
        tests = g["test"].tolist()
        sd = statistics.stdev(tests) if len(tests) > 1 else 0.0
        print(
            f"| {dataset} | {variant} | {', '.join(f'{t:.4f}' for t in tests)} | "
            f"{statistics.mean(tests):.4f} ± {sd:.4f} | {g['valid'].mean():.4f} | {g['s'].mean():.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
