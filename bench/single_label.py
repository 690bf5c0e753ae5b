"""Single-label classification on real data: mlic's `task="single_label"` against a plain PyTorch loop
with the same recipe, in the same run, over several seeds, beside the chance levels.

The data: emoji drawn by four vendors, each labelled by its emoji.json category (9 classes), built by
`bench/data_emoji.py --labels category` into data/emoji_category (every vendor's drawing of one emoji
in one split). The recipe is the suite's (`bench/suite.py`): `resnet10t` from random weights at 48×48,
batch 64, AdamW (lr 2e-3, weight decay 1e-2) with OneCycleLR, horizontal flips, a fixed number of
epochs; the model of the epoch with the best valid accuracy is scored on test. The plain loop is what
a user writes by hand: images decoded and resized once with Pillow into memory, softmax cross-entropy,
torch's defaults. Chance: always the most frequent train class, and guessing by the train frequencies.

Usage (from the repo root, after `make install`; the data set is built on first use):
    .venv/bin/python bench/single_label.py [--seeds 0 1 2] [--epochs 8]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).parent))

import suite  # noqa: E402
from parity import LR, load_split  # noqa: E402

from mlic import Stage  # noqa: E402
from mlic.train.stages import run  # noqa: E402


def scores(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, norm) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(norm(x[i : i + 256])) for i in range(0, len(x), 256)])
    predicted, labels = logits.argmax(1).numpy(), y.argmax(1).numpy()
    return {
        "accuracy": float((predicted == labels).mean()),
        "f1_macro": float(
            f1_score(labels, predicted, labels=range(y.shape[1]), average="macro", zero_division=0)
        ),
    }


def plain_loop(root: Path, seed: int, epochs: int) -> dict[str, float]:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    (xt, yt), (xv, yv), (xs, ys) = (load_split(root, s) for s in ("train", "valid", "test"))
    model = timm.create_model(suite.MODEL, pretrained=False, num_classes=yt.shape[1])
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1) * 255

    def norm(x: torch.Tensor) -> torch.Tensor:
        return (x.float() - mean) / std

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(xt, yt.argmax(1)), batch_size=suite.BATCH, shuffle=True
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=epochs * len(loader))
    loss_fn = torch.nn.CrossEntropyLoss()
    best, best_state = -1.0, None
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            flip = torch.rand(len(x)) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            optimizer.zero_grad()
            loss_fn(model(norm(x)), y).backward()
            optimizer.step()
            scheduler.step()
        value = scores(model, xv, yv, norm)["accuracy"]
        if value > best:
            best, best_state = value, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return {"valid": best, **{f"test_{k}": v for k, v in scores(model, xs, ys, norm).items()}}


def mlic_run(seed: int, epochs: int) -> dict[str, float]:
    config = suite.config(
        "emoji_category",
        f"single_label_{seed}",
        [Stage("full", epochs=epochs, lr=LR)],
        seed=seed,
        task="single_label",
    )
    exp_dir = run(config).exp_dir
    valid = float(pd.read_csv(exp_dir / "metrics.csv")["valid/accuracy"].max())
    test = suite.test_metrics(exp_dir)
    return {"valid": valid, "test_accuracy": test["accuracy"], "test_f1_macro": test["f1_macro"]}


def chance(root: Path) -> dict[str, float]:
    train = pd.read_csv(root / "train_df.csv").drop(columns="Id")
    test = pd.read_csv(root / "test_df.csv").drop(columns="Id")
    freq = train.mean().to_numpy()
    share = test.mean().to_numpy()
    return {"majority": float(share[freq.argmax()]), "by frequency": float((freq * share).sum())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    suite.quiet()
    root = Path(suite.ensure_data("emoji_category"))
    rows = []
    for seed in args.seeds:
        for name, fn in (
            ("plain loop", lambda s=seed: plain_loop(root, s, args.epochs)),
            ("mlic", lambda s=seed: mlic_run(s, args.epochs)),
        ):
            start = time.time()
            result = fn()
            rows.append({"runner": name, "seed": seed, **result, "seconds": time.time() - start})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    print(f"\nemoji by category, {args.epochs} epochs, seeds {args.seeds}; chance on test: {chance(root)}")
    summary = df.groupby("runner")[["valid", "test_accuracy", "test_f1_macro", "seconds"]].agg(
        ["mean", "std"]
    )
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
