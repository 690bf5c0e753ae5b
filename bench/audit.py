"""The label audit against known noise: flip a fixed 5% of the train labels (seeded), train on the noisy
labels, run `python -m mlic.audit`'s audit, and see how many of the flipped rows its top k holds
(k = the number flipped), against a baseline that ranks the rows by the loss of a single model trained on
the noisy labels (the usual cheap check: the experiment's own model, on its own train rows).

Per data set and seed:
  - the noise: 5% of the train rows, each with one class drawn at random and its label flipped (0 <-> 1);
  - the experiment: the suite recipe from the pretrained backbone of `bench/recipe.py` (`resnet10t` at
    48x48, flips, the whole network at AdamW 2e-3 for `--epochs`), on the noisy train labels;
  - the audit, both ways `python -m mlic.audit` offers: `--folds 3` (the default: 3 fold models, each
    the same recipe on two thirds of train, predicting the third it left out) and `--folds 0` (the
    experiment's own model predicts its own train rows); each ranks the rows by cleanlab's label-quality
    score (per label the probability of the label given, a row's labels combined by a softmin);
  - the baseline: the rows ranked by their summed BCE under the experiment's model (in-sample);
  - per scheme: the flipped rows in its top k, the rows confident learning flags (how many, precision,
    recall), and for the flipped rows in the top k whether the label listed first is the flipped one.

`--epochs 24` trains the experiment and the fold models four times longer (experiments named
`audit_<set>_<seed>_24ep`): what happens when a model has had time to learn the noise.

With k the number flipped, precision and recall at k are the same number. Results are kept in
experiments/bench_audit/results.json as they come, so a rerun trains only what is missing. Usage (from
the repo root, after `make install`, `pip install -e ".[bench]"` and `bench/recipe.py`'s backbones):
    .venv/bin/python bench/audit.py [--datasets emoji icons] [--seeds 0 1 2] [--epochs 6] [--folds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

import recipe  # noqa: E402
import suite  # noqa: E402

from mlic import Stage  # noqa: E402
from mlic.data.tables import read_splits  # noqa: E402
from mlic.experiment.files import MODEL_BEST  # noqa: E402
from mlic.train.audit import mean_loss, predict_table, run_audit  # noqa: E402
from mlic.train.stages import run  # noqa: E402

OUT = Path("experiments/bench_audit")
NOISE = 0.05
RANKINGS = {  # rankings()'s keys and their column names
    "kfold_ema": "k-fold, cleanlab's default (EMA)",
    "kfold_softmin": "k-fold, softmin",
    "own_ema": "own model, EMA",
    "own_softmin": "own model, softmin",
    "mean_softmin": "mean of both, softmin",
}


def noisy_copy(dataset: str, seed: int) -> tuple[Path, list[tuple[str, str]]]:
    """A data folder whose train labels have 5% of rows with one label flipped (the images are the
    original folder's); the flipped (id, class) pairs."""
    src = Path(suite.ensure_data(dataset)).resolve()
    out = OUT / f"data_{dataset}_{seed}"
    out.mkdir(parents=True, exist_ok=True)
    train = pd.read_csv(src / "train_df.csv", dtype={"Id": str})
    classes = [c for c in train.columns if c != "Id"]
    rng = np.random.default_rng(1000 + seed)
    rows = rng.choice(len(train), round(NOISE * len(train)), replace=False)
    picked = rng.integers(0, len(classes), len(rows))
    for r, c in zip(rows, picked):
        train.loc[r, classes[c]] = 1 - train.loc[r, classes[c]]
    train.to_csv(out / "train_df.csv", index=False)
    for split in ("valid", "test"):
        pd.read_csv(src / f"{split}_df.csv", dtype={"Id": str}).to_csv(out / f"{split}_df.csv", index=False)
    return out, [(str(train.Id[r]), classes[c]) for r, c in zip(rows, picked)]


def at_k(ranked_ids: list[str], truth: set[str], k: int) -> float:
    return len(set(ranked_ids[:k]) & truth) / k


def scheme(audit, ids: list[str], truth: set[str], k: int, flipped: list[tuple[str, str]]) -> dict:
    """One audit's numbers: flipped rows in its top k, what confident learning flags, and whether the
    label listed first for a flipped row in the top k is the flipped one."""
    issues = audit.issues["train"]
    ranked = [ids[i] for i in issues.ranking()]
    flagged = {ids[i] for i in np.flatnonzero(issues.flagged.any(1))}
    table = audit.table[audit.table["split"] == "train"]
    first = table.drop_duplicates(["id"]).set_index("id")["class"]
    top = set(ranked[:k])
    named = [first.get(i) == c for i, c in flipped if i in top]
    return {
        "at_k": at_k(ranked, truth, k),
        "flagged": len(flagged),
        "flagged_precision": len(flagged & truth) / max(len(flagged), 1),
        "flagged_recall": len(flagged & truth) / k,
        "class_named": float(np.mean(named)) if named else float("nan"),
    }


def one(dataset: str, seed: int, epochs: int, folds: int) -> dict:
    root, flipped = noisy_copy(dataset, seed)
    name = f"audit_{dataset}_{seed}" + ("" if epochs == 6 else f"_{epochs}ep")
    config = suite.config(
        dataset,
        name,
        [Stage("full", epochs=epochs, lr=recipe.LR)],
        pretrained=recipe.pretrained_backbone(dataset),
        seed=seed,
    )
    config.output_dir = str(OUT)
    config.data.root = str(root)
    config.data.images = str(Path(suite.ensure_data(dataset)).resolve() / "Images")
    exp_dir = config.experiment_dir
    started = time.time()
    if not (exp_dir / "report.md").is_file():
        run(config)
    train_s = time.time() - started
    train = read_splits(config.data, config.seed)["train"]
    ids = [str(i) for i in train.ids]
    truth = {i for i, _ in flipped}
    k = len(truth)
    out = {"dataset": dataset, "seed": seed, "epochs": epochs, "train_rows": len(ids), "flipped": k}
    for label, n in (("kfold", folds), ("own", 0)):
        started = time.time()
        audit = run_audit(exp_dir, folds=n, config=config, splits=("train",))
        out[f"{label}_s"] = round(time.time() - started)
        out[label] = scheme(audit, ids, truth, k, flipped)

    targets = train.targets.astype(np.float64)
    own = predict_table(exp_dir / MODEL_BEST, train, config)
    p = np.clip(own, 1e-7, 1 - 1e-7)
    loss = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).sum(1)
    out["loss_at_k"] = at_k([ids[i] for i in np.argsort(-loss, kind="stable")], truth, k)
    out["rankings"] = rankings(exp_dir, folds, ids, targets, own, truth, k)
    valid = read_splits(config.data, config.seed)["valid"]
    out["loss_train_own"] = mean_loss(targets, own, True)  # what --folds 0's warning compares
    out["loss_valid"] = mean_loss(valid.targets, predict_table(exp_dir / MODEL_BEST, valid, config), True)
    out["train_s"] = round(train_s)
    return out


def rankings(
    exp_dir: Path, folds: int, ids: list[str], targets: np.ndarray, own: np.ndarray, truth: set[str], k: int
) -> dict[str, float]:
    """Flipped rows in the top k of the other rankings considered: cleanlab's default combination of a
    row's labels (an exponential moving average) against the softmin the audit uses, on the fold
    models' probabilities, the experiment's own, and their mean."""
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    oof = np.zeros_like(targets)
    position = {i: n for n, i in enumerate(ids)}
    for f in range(1, folds + 1):
        saved = pd.read_csv(exp_dir / "audit" / f"fold-{f}.csv", dtype={"id": str}).set_index("id")
        oof[[position[i] for i in saved.index]] = saved.to_numpy()
    labels = [list(np.flatnonzero(row)) for row in targets]
    out = {}
    for source, probs in (("kfold", oof), ("own", own), ("mean", (oof + own) / 2)):
        for name, kwargs in (("ema", {}), ("softmin", {"aggregator_kwargs": {"method": "softmin"}})):
            score = get_label_quality_scores(labels, np.clip(probs, 1e-6, 1 - 1e-6), **kwargs)
            out[f"{source}_{name}"] = at_k([ids[i] for i in np.argsort(score, kind="stable")], truth, k)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["emoji", "icons"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=6, help="epochs of the experiment and of each fold model")
    p.add_argument("--folds", type=int, default=3)
    args = p.parse_args()
    suite.quiet()
    OUT.mkdir(parents=True, exist_ok=True)
    store = OUT / "results.json"
    results = json.loads(store.read_text()) if store.is_file() else {}
    for dataset in args.datasets:
        for seed in args.seeds:
            key = f"{dataset}/{seed}/{args.epochs}/{args.folds}"
            if "loss_valid" not in results.get(key, {}):  # (a result of an earlier version of this script)
                results[key] = one(dataset, seed, args.epochs, args.folds)
                store.write_text(json.dumps(results, indent=1))
            print(json.dumps(results[key]), flush=True)
    print()
    print(
        "| data set | seed | epochs | flipped rows (k) of train | baseline: in-sample loss | audit, k-fold "
        "| audit, the experiment's model | confident learning flags (precision / recall): k-fold; own model "
        "| flipped class listed first: k-fold; own model | seconds: training / k-fold audit / own-model audit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = [results[f"{d}/{s}/{args.epochs}/{args.folds}"] for d in args.datasets for s in args.seeds]
    for r in rows:
        kf, own = r["kfold"], r["own"]
        print(
            f"| {r['dataset']} | {r['seed']} | {r['epochs']} | {r['flipped']} of {r['train_rows']} "
            f"| {r['loss_at_k']:.3f} | {kf['at_k']:.3f} | {own['at_k']:.3f} "
            f"| {kf['flagged']} ({kf['flagged_precision']:.2f} / {kf['flagged_recall']:.2f}); "
            f"{own['flagged']} ({own['flagged_precision']:.2f} / {own['flagged_recall']:.2f}) "
            f"| {kf['class_named']:.2f}; {own['class_named']:.2f} | {r['train_s']} / {r['kfold_s']} / {r['own_s']} |"
        )
    for r in rows:
        print(
            f"{r['dataset']} seed {r['seed']}, {r['epochs']} epochs: the model's mean BCE per label "
            f"{r['loss_train_own']:.4f} on its train rows, {r['loss_valid']:.4f} on valid"
        )
    print()
    print("| data set | seeds | epochs | " + " | ".join(RANKINGS.values()) + " |")
    print("|---|---|---|" + "---|" * len(RANKINGS))
    for d in args.datasets:
        mine = [r for r in rows if r["dataset"] == d]
        cells = " | ".join(f"{np.mean([r['rankings'][key] for r in mine]):.3f}" for key in RANKINGS)
        print(f"| {d} | {len(mine)} | {args.epochs} | {cells} |")
    print()
    for d in args.datasets:
        mine = [r for r in rows if r["dataset"] == d]
        base = np.mean([r["loss_at_k"] for r in mine])
        kf = np.mean([r["kfold"]["at_k"] for r in mine])
        own = np.mean([r["own"]["at_k"] for r in mine])
        print(f"| {d} | mean | | | {base:.3f} | {kf:.3f} | {own:.3f} | | | |")


if __name__ == "__main__":
    main()
