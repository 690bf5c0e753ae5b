"""Shared helpers of the bench data-set builders (bench/data_*.py): npm packages, output folder, images,
a seeded group split, the split CSVs and their summary.

The builders write the course layout that mlic reads: <out>/Images/<Id>.png and <out>/{train,valid,test}_df.csv,
each CSV an `Id` column then one 0/1 column per class.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SPLITS = ("train", "valid", "test")
FRACTIONS = (0.70, 0.15, 0.15)


def parser(doc: str, out: str) -> argparse.ArgumentParser:
    """The builders' common command line."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--out", default=out, help=f"output folder (default {out})")
    p.add_argument("--packages", default="data/npm", help="npm install prefix (default data/npm)")
    p.add_argument("--classes", type=int, default=18, help="number of classes (default 18)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--force", action="store_true", help="rebuild into an existing data set")
    return p


def npm_packages(prefix: str | Path, packages: dict[str, str]) -> Path:
    """node_modules under `prefix` holding `packages` (name -> version), installed with npm if missing."""
    modules = Path(prefix) / "node_modules"

    def installed(name: str) -> str | None:
        meta = modules / name / "package.json"
        return json.loads(meta.read_text())["version"] if meta.is_file() else None

    missing = [f"{name}@{version}" for name, version in packages.items() if installed(name) != version]
    if missing:
        print(f"npm install {' '.join(missing)} into {prefix}", flush=True)
        Path(prefix).mkdir(parents=True, exist_ok=True)
        cmd = ["npm", "install", "--prefix", str(prefix), "--save-exact", "--no-audit", "--no-fund"]
        subprocess.run([*cmd, "--loglevel=error", *missing], check=True, stdout=subprocess.DEVNULL)
    return modules


def prepare_out(out: str | Path, force: bool) -> Path:
    """An empty <out>/Images; an existing data set is removed only with --force."""
    out = Path(out)
    old = [out / "Images", *(out / f"{s}_df.csv" for s in SPLITS)]
    if any(p.exists() for p in old):
        if not force:
            raise SystemExit(f"{out} already holds a data set; pass --force to rebuild it")
        shutil.rmtree(out / "Images", ignore_errors=True)
        for p in old[1:]:
            p.unlink(missing_ok=True)
    (out / "Images").mkdir(parents=True)
    return out


def save_on_white(image: Image.Image, path: Path, size: int = 64) -> None:
    """`image` composited onto white, resized to size×size, saved as an RGB PNG."""
    rgba = image.convert("RGBA")
    if rgba.size != (size, size):
        rgba = rgba.resize((size, size), Image.Resampling.LANCZOS)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    Image.alpha_composite(white, rgba).convert("RGB").save(path, optimize=True)


def split_groups(labels: np.ndarray, groups: Sequence[str], seed: int) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test) per row; all rows of a group share one split.

    Greedy over groups, largest first (ties in seeded random order): each group goes to the split where
    it brings the per-class positive counts and the image count closest to FRACTIONS of their totals
    (squared shortfall/excess relative to the target, so rare classes weigh as much as common ones).
    """
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    counts = np.zeros((len(names), labels.shape[1] + 1))
    np.add.at(counts, inverse, np.column_stack([labels, np.ones(len(labels))]))
    target = np.outer(FRACTIONS, counts.sum(axis=0))
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-counts[order, -1], kind="stable")]
    assigned = np.zeros_like(target)
    where = np.empty(len(names), dtype=int)
    for g in order:
        cost = (
            ((assigned + counts[g] - target) ** 2 - (assigned - target) ** 2) / np.maximum(target, 1)
        ).sum(1)
        where[g] = int(np.argmin(cost))
        assigned[where[g]] += counts[g]
    return where[inverse]


def write_splits(
    out: Path, ids: Sequence[str], groups: Sequence[str], labels: np.ndarray, classes: list[str], seed: int
) -> None:
    """Split by group, write <out>/<split>_df.csv (write, then rename) and print the summary."""
    split = split_groups(labels, groups, seed)
    table = pd.DataFrame(labels.astype(np.int8), columns=classes)
    table.insert(0, "Id", list(ids))
    for i, name in enumerate(SPLITS):
        path = out / f"{name}_df.csv"
        table[split == i].to_csv(path.with_suffix(".csv.tmp"), index=False)
        os.replace(path.with_suffix(".csv.tmp"), path)
    summary(table, pd.Series(list(groups)), split, classes)


def summary(table: pd.DataFrame, groups: pd.Series, split: np.ndarray, classes: list[str]) -> None:
    """Per-split images, groups, labels per image and per-class positives; warns on empty classes."""
    crossing = groups.groupby(split).unique().explode().duplicated().sum()
    assert crossing == 0, f"{crossing} groups cross splits"
    print(f"{len(table)} images, {groups.nunique()} groups, {len(classes)} classes")
    print(f"{'split':<6} {'images':>7} {'groups':>7} {'labels/img':>10}  min positives")
    positives = pd.DataFrame({s: table[split == i][classes].sum() for i, s in enumerate(SPLITS)})
    for i, s in enumerate(SPLITS):
        rows = table[split == i][classes]
        low = positives[s].idxmin()
        print(
            f"{s:<6} {len(rows):>7} {groups[split == i].nunique():>7} {rows.sum(axis=1).mean():>10.3f}"
            f"  {positives[s].min()} ({low})"
        )
    print("positives per class:")
    print(positives.to_string())
    empty = positives.columns[(positives == 0).any()].tolist()
    for s in empty:
        print(
            f"warning: split {s} has classes without positives: {', '.join(positives.index[positives[s] == 0])}"
        )
