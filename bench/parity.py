"""Parity with a plain PyTorch loop: the same recipe through train.py's path and through a hand-written
loop, on each data set of the real-data suite, over several seeds.

The recipe: `resnet10t` from random weights at 48×48 (images shrunk from 64×64), batch 64, AdamW
(lr 2e-3, weight decay 1e-2) with OneCycleLR, horizontal flips, a fixed number of epochs; the model
of the epoch with the best valid mAP is scored on test. The plain loop is what a user writes by hand:
images decoded and resized once with Pillow (antialiased, the model's bicubic interpolation) into
memory, torch's defaults everywhere (weight decay on every parameter, `pct_start=0.3`, the last short
batch kept, timm's head initialisation). mlic runs the config a user would write for the same recipe,
with mlic's defaults (prior-initialised head, no weight decay on norms and biases, `pct_start=0.25`).

`--variants` adds ablations of mlic's side: `aliased-resize` (images shrunk with `cv2.resize` as mlic
did before) and `torch-defaults` (no prior initialisation, `pct_start=0.3`).

Usage (from the repo root, after `make install`; the data sets are built on first use):
    .venv/bin/python bench/parity.py [--datasets emoji icons] [--seeds 0 1 2] [--epochs 8]
    .venv/bin/python bench/parity.py --variants aliased-resize torch-defaults
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import timm
import torch
from PIL import Image
from sklearn.metrics import average_precision_score

sys.path.insert(0, str(Path(__file__).parent))

import suite  # noqa: E402

import mlic.data.images  # noqa: E402
from mlic import Stage  # noqa: E402
from mlic.train.stages import run  # noqa: E402

LR = 2e-3
antialiased_resize = mlic.data.images.resize


def load_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N×3×H×W images (decoded and resized once) and float 0/1 targets of one split."""
    df = pd.read_csv(root / f"{split}_df.csv", dtype={"Id": str})
    h, w = suite.IMG_SIZE
    images = [
        np.asarray(
            Image.open(root / "Images" / f"{i}.png").convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
        )
        for i in df["Id"]
    ]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(df.drop(columns="Id").to_numpy(dtype=np.float32))
    return x, y


def mean_ap(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, norm) -> float:
    model.eval()
    with torch.no_grad():
        probs = torch.cat([torch.sigmoid(model(norm(x[i : i + 256]))) for i in range(0, len(x), 256)])
    return float(average_precision_score(y.numpy(), probs.numpy(), average="macro"))


def plain_loop(root: Path, seed: int, epochs: int, init: str | None = None) -> dict[str, float]:
    """The hand-written loop, from random weights or from the backbone of the model file `init`."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    (xt, yt), (xv, yv), (xs, ys) = (load_split(root, s) for s in ("train", "valid", "test"))
    model = timm.create_model(suite.MODEL, pretrained=False, num_classes=yt.shape[1])
    if init is not None:  # what a user writes: the backbone's weights, a new head
        state = torch.load(init, map_location="cpu", weights_only=True)["state_dict"]
        head = model.default_cfg["classifier"]
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith(head)}, strict=False)
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1) * 255

    def norm(x: torch.Tensor) -> torch.Tensor:
        return (x.float() - mean) / std

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(xt, yt), batch_size=suite.BATCH, shuffle=True
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=epochs * len(loader))
    loss_fn = torch.nn.BCEWithLogitsLoss()
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
        value = mean_ap(model, xv, yv, norm)
        if value > best:
            best, best_state = value, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return {"valid": best, "test": mean_ap(model, xs, ys, norm)}


def aliased_resize(image: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """What mlic did before: `cv2.resize` at the model's interpolation, which aliases when it shrinks."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    code = {"bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}.get(interpolation, cv2.INTER_LINEAR)
    return cv2.resize(image, (w, h), interpolation=code)


VARIANTS = {
    "default": "mlic's defaults",
    "aliased-resize": "mlic's defaults, but images shrunk with cv2.resize (bicubic, no antialiasing), as before",
    "torch-defaults": "no prior initialisation, OneCycleLR pct_start=0.3 (torch's default)",
}


def mlic_run(dataset: str, seed: int, epochs: int, variant: str = "default") -> dict[str, float]:
    name = f"parity_{dataset}_{seed}" + ("" if variant == "default" else f"_{variant}")
    config = suite.config(dataset, name, [Stage("full", epochs=epochs, lr=LR)], seed=seed)
    if variant == "torch-defaults":
        config.model.prior_init = False
        config.scheduler = partial(torch.optim.lr_scheduler.OneCycleLR, pct_start=0.3)
    if variant == "aliased-resize":
        mlic.data.images.resize = aliased_resize  # ImageTransform looks it up at call time
    try:
        exp_dir = run(config).exp_dir
    finally:
        mlic.data.images.resize = antialiased_resize
    valid = float(pd.read_csv(exp_dir / "metrics.csv")["valid/map"].max())
    return {"valid": valid, "test": suite.test_metrics(exp_dir)["map"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["emoji", "icons"], choices=list(suite.DATASETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["plain loop", "default"],
        choices=["plain loop", *VARIANTS],
        help="runs per seed: the plain loop and mlic variants ("
        + "; ".join(f"{k}: {v}" for k, v in VARIANTS.items())
        + ")",
    )
    args = parser.parse_args()
    suite.quiet()
    rows = []
    for dataset in args.datasets:
        root = Path(suite.ensure_data(dataset))
        for seed in args.seeds:  # alternate the two, so a slower stretch of the machine hits both
            for variant in args.variants:
                start = time.time()
                if variant == "plain loop":
                    who, result = variant, plain_loop(root, seed, args.epochs)
                else:
                    who = "train.py" + ("" if variant == "default" else f" ({variant})")
                    result = mlic_run(dataset, seed, args.epochs, variant)
                rows.append(
                    {"dataset": dataset, "who": who, "seed": seed, **result, "seconds": time.time() - start}
                )
                print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    print(
        f"\n| data set | run | test mAP per seed ({', '.join(map(str, args.seeds))}) | mean ± sd | best valid mAP mean | seconds per run |"
    )
    print("|---|---|---|---|---|---|")
    for (dataset, who), g in df.groupby(["dataset", "who"], sort=False):
        per_seed = ", ".join(f"{v:.4f}" for v in g["test"])
        print(
            f"| {dataset} | {who} | {per_seed} | {g['test'].mean():.4f} ± {g['test'].std(ddof=1):.4f} | "
            f"{g['valid'].mean():.4f} | {g['seconds'].mean():.0f} |"
        )
    for dataset, g in df.groupby("dataset", sort=False):
        if not {"plain loop", "train.py"} <= set(g.who):
            continue
        plain = g[g.who == "plain loop"].set_index("seed")["test"]
        ours = g[g.who == "train.py"].set_index("seed")["test"]
        diff = ours - plain
        print(
            f"{dataset}: train.py − plain loop, paired by seed: mean {diff.mean():+.4f}, per seed "
            + ", ".join(f"{d:+.4f}" for d in diff)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
