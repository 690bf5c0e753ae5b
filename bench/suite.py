"""The real-data development suite: its data sets, the model and recipe every suite benchmark shares.

Three multi-label data sets that packages on the npm registry ship, built by `bench/data_emoji.py`,
`bench/data_icons.py` and `bench/data_pokemon.py` (never committed; each split keeps every underlying
object — one emoji in all its vendors' drawings, one icon family, one Pokémon evolution family — in one
split). The recipe is small enough for 2 CPU cores:
`resnet10t` at 48×48 (the 64×64 images are shrunk, so antialiasing matters), batch 64, flips.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from functools import partial
from pathlib import Path

import albumentations as A
import torch

from mlic import Config, Data, Model, Stage

DATASETS = {
    "emoji": "data/emoji",
    "icons": "data/icons",
    "emoji_category": "data/emoji_category",
    "pokemon": "data/pokemon",
}
BUILDERS = {  # the builder's command line, less --out
    "emoji": ["bench/data_emoji.py"],
    "icons": ["bench/data_icons.py"],
    "emoji_category": ["bench/data_emoji.py", "--labels", "category"],  # single-label
    "pokemon": ["bench/data_pokemon.py"],
}
MODEL = "resnet10t"
IMG_SIZE = (48, 48)
BATCH = 64


def ensure_data(name: str) -> str:
    """The data set's folder, built by its builder first when it is not there yet."""
    root = DATASETS[name]
    if not (Path(root) / "train_df.csv").is_file():
        subprocess.run([sys.executable, *BUILDERS[name], "--out", root], check=True)
    return root


def adamw(lr: float = 2e-3) -> partial:
    return partial(torch.optim.AdamW, lr=lr, weight_decay=1e-2)


def sgd(lr: float = 0.1) -> partial:
    return partial(torch.optim.SGD, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)


def config(
    dataset: str,
    name: str,
    stages: list[Stage],
    optimizer: partial | None = None,
    pretrained: bool | str = False,
    checkpoint: str | None = None,
    seed: int = 0,
    **overrides,
) -> Config:
    """A suite experiment: `MODEL` at `IMG_SIZE`, flips, OneCycleLR (mlic's default), quiet Trainer."""
    model = Model(name=MODEL, pretrained=pretrained, checkpoint=checkpoint)
    return Config(
        experiment_name=name,
        seed=seed,
        data=Data(
            root=ensure_data(dataset),
            image_pattern="{id}.png",
            img_size=IMG_SIZE,
            batch_size=BATCH,
            num_workers=1,
            augmentations=A.HorizontalFlip(p=0.5),
        ),
        model=model,
        optimizer=optimizer or adamw(),
        stages=stages,
        save_top_k=1,
        trainer=dict(enable_progress_bar=False, enable_model_summary=False),
        **overrides,
    )


def quiet() -> None:
    """Warnings only: the benchmarks print their own tables."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mlic").setLevel(logging.WARNING)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def test_metrics(exp_dir: Path) -> dict[str, float]:
    """The test row of an experiment's report.md (metrics of its best model) as a dict."""
    lines = (Path(exp_dir) / "report.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| split |"))
    row = next(line for line in lines if line.startswith("| test |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    values = [c.strip() for c in row.strip("|").split("|")]
    return {k: float(v) for k, v in zip(names[1:], values[1:])}
