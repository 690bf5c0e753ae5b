"""Semantic segmentation on real data: mlic's `task="segmentation"` against a plain PyTorch loop with the
same recipe, in the same run, over several seeds, beside the chance levels.

The data ("emoji on backgrounds", built on first use into data/emoji_segmentation by `build_data` below):
every emoji drawn by Apple, Google, Twitter and Facebook (the 64×64 RGBA PNGs of the npm packages
emoji-datasource-{apple,google,twitter,facebook}@16.0.0, as `bench/data_emoji.py` uses them; skin-tone
variations and the "Component" category left out), each shrunk (Lanczos) to a random side of 16-40 px
and pasted at a random place of a 48×48 background: a linear gradient between two random colours in a
random direction, in half of the images blended with a magnified random crop of another emoji of the
same split (colour blobs and edges of emoji palettes), then Gaussian noise. The mask is the pasted
emoji's alpha (alpha >= 128 → 255 "emoji", else 0 "background"). Every vendor's drawing of one emoji
is in one split (~70/15/15 of the emoji, `_suite.split_groups`); the split's other-emoji crops come
from the same split. Layout: data/emoji_segmentation/{train,valid,test}/{images,masks}/<vendor>_<unified>.png;
a marker file (.built.json, the build settings and counts) makes later runs reuse it.

The recipe, the same for both runners: a segmentation-models-pytorch Unet over timm's resnet10t
(`tu-resnet10t`) from random weights, encoder_depth=3, decoder_channels=(64, 32, 16), batch 64, AdamW
(lr 2e-3, weight decay 1e-2) with OneCycleLR over a fixed number of epochs, horizontal flips (image and
mask), Dice + cross-entropy; the model of the epoch with the best valid mean IoU is scored on test.
mlic runs the config a user would write (mlic's defaults: Dice of its own `mlic.losses.segmentation.DiceLoss`,
the head's bias at the train pixel priors, no weight decay on norms and biases, `pct_start=0.25`).
The plain loop is what a user writes by hand: images and masks decoded once with Pillow into memory,
`smp.create_model`, `smp.losses.DiceLoss(mode="multiclass")` + `nn.CrossEntropyLoss`, torch's defaults.

The metric (the definition mlic uses): per class, IoU = tp / (tp + fp + fn) over every pixel of the
split, then the mean over the 2 classes (background included); `fg_iou` is the emoji class alone. It is
computed here from the predicted and true masks (and checked against torchmetrics' JaccardIndex), for
the plain loop and for mlic's model.best.pth alike; mlic's own reported test IoU is printed beside it
(`mlic_test_iou`). Chance on test: everything background; a centred square and a centred disc of the
mean train foreground area; each pixel's majority class over the train masks.

Usage (from the repo root, after `make install`; the data set is built on first use):
    .venv/bin/python bench/segmentation.py [--seeds 0 1 2] [--epochs 6]
"""

from __future__ import annotations

import os

# OpenMP threads that sleep when they wait: spinning ones slow a step ~10× when another process holds
# a core of a 2-core machine (read when torch loads, so before the import)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import random
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import segmentation_models_pytorch as smp
import timm
import torch
from PIL import Image
from torch import nn
from torchmetrics.classification import MulticlassJaccardIndex

sys.path.insert(0, str(Path(__file__).parent))

import _suite  # noqa: E402
import suite  # noqa: E402
from data_emoji import VENDORS, VERSION  # noqa: E402

from mlic import Config, Data, Model, Stage  # noqa: E402
from mlic.experiment.checkpoints import load_model_file  # noqa: E402
from mlic.train.stages import run  # noqa: E402

ROOT = Path("data/emoji_segmentation")
PACKAGES = "data/npm"
OUTPUT_DIR = "/tmp/mlic_bench_segmentation"
SIZE = 48  # images are SIZE×SIZE
SCALE = (16, 40)  # side of the pasted emoji, px (both included)
TEXTURE_P = 0.5  # share of backgrounds blended with a magnified crop of another emoji
MAX_EMOJI = None  # cap on the number of emoji (groups) used, None: all (~1900 emoji, ~7600 images)
BUILD = {
    "version": 1,
    "packages": f"emoji-datasource-*@{VERSION}",
    "size": SIZE,
    "scale": list(SCALE),
    "texture_p": TEXTURE_P,
    "max_emoji": MAX_EMOJI,
    "seed": 0,
}
CLASSES = {"background": 0, "emoji": 255}
LR = 2e-3
BATCH = 64
ENCODER = "tu-resnet10t"
UNET_KWARGS = {"encoder_depth": 3, "decoder_channels": (64, 32, 16)}


# ------------------------------------------------------------------------------------------ the data


def background(rng: np.random.Generator, textures: list[Image.Image]) -> np.ndarray:
    """A SIZE×SIZE×3 float background: a random two-colour gradient, maybe blended with a magnified crop
    of one of `textures` (RGBA emoji, on a random colour), then Gaussian noise (not yet clipped)."""
    c0, c1 = rng.uniform(0, 255, (2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    image = c0 + t[..., None] * (c1 - c0)
    if textures and rng.random() < TEXTURE_P:
        rgba = textures[int(rng.integers(len(textures)))]
        fill = Image.new("RGBA", rgba.size, (*(int(v) for v in rng.integers(0, 256, 3)), 255))
        flat = Image.alpha_composite(fill, rgba).convert("RGB")
        k = int(rng.integers(8, 25))
        x, y = (int(v) for v in rng.integers(0, rgba.size[0] - k + 1, 2))
        crop = flat.crop((x, y, x + k, y + k)).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        a = rng.uniform(0.5, 1.0)
        image = (1 - a) * image + a * np.asarray(crop, dtype=np.float64)
    return image + rng.normal(0.0, rng.uniform(0, 20), image.shape)


def composite(
    rng: np.random.Generator, emoji: Image.Image, textures: list[tuple[Image.Image, str]], exclude: str
) -> tuple[Image.Image, Image.Image]:
    """`emoji` (RGBA) at a random side in SCALE and a random place on a `background` whose texture is an
    emoji of `textures` ((image, emoji code) pairs) other than `exclude`: (RGB image, L mask)."""
    side = int(rng.integers(SCALE[0], SCALE[1] + 1))
    small = emoji.resize((side, side), Image.Resampling.LANCZOS)
    x, y = (int(v) for v in rng.integers(0, SIZE - side + 1, 2))
    while True:  # another emoji, not a drawing of this one
        texture, group = textures[int(rng.integers(len(textures)))]
        if group != exclude:
            break
    canvas = Image.fromarray(np.clip(background(rng, [texture]), 0, 255).round().astype(np.uint8))
    canvas = canvas.convert("RGBA")
    canvas.alpha_composite(small, (x, y))
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[y : y + side, x : x + side] = np.where(np.asarray(small)[..., 3] >= 128, 255, 0)
    return canvas.convert("RGB"), Image.fromarray(mask, mode="L")


def build_data(root: Path = ROOT, packages: str = PACKAGES) -> dict:
    """Build the data set into `root` (see the module docstring) unless its marker says it is built with
    BUILD; return the marker's record (settings and counts)."""
    marker = root / ".built.json"
    if marker.is_file():
        record = json.loads(marker.read_text())
        if record.get("build") == BUILD:
            return record
        print(f"{root} was built with other settings; rebuilding", flush=True)
    start = time.time()
    modules = _suite.npm_packages(packages, {f"emoji-datasource-{v}": VERSION for v in VENDORS})
    emoji = json.loads((modules / "emoji-datasource-apple" / "emoji.json").read_text())
    emoji = [e for e in emoji if e["category"] != "Component"]  # skin_variations are nested: not visited
    if MAX_EMOJI is not None:
        keep = np.random.default_rng(BUILD["seed"]).permutation(len(emoji))[:MAX_EMOJI]
        emoji = [emoji[i] for i in sorted(keep)]
    ids, groups, sources = [], [], []
    for e in emoji:
        for vendor in VENDORS:
            source = modules / f"emoji-datasource-{vendor}" / "img" / vendor / "64" / e["image"]
            if e[f"has_img_{vendor}"] and source.is_file():
                with Image.open(source) as image:
                    sources.append(image.convert("RGBA"))
                ids.append(f"{vendor}_{e['unified'].lower()}")
                groups.append(e["unified"])
    split = _suite.split_groups(np.ones((len(ids), 1)), groups, BUILD["seed"])
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {}
    for s, name in enumerate(_suite.SPLITS):
        for sub in ("images", "masks"):
            (tmp / name / sub).mkdir(parents=True)
        rows = np.flatnonzero(split == s)
        textures = [(sources[i], groups[i]) for i in rows]
        fg = 0
        for n, i in enumerate(rows):
            # the other emoji of the split give the texture; one generator per image, so a rebuild is identical
            rng = np.random.default_rng([BUILD["seed"], s, n])
            image, mask = composite(rng, sources[i], textures, exclude=groups[i])
            image.save(tmp / name / "images" / f"{ids[i]}.png")
            mask.save(tmp / name / "masks" / f"{ids[i]}.png")
            fg += int((np.asarray(mask) > 0).sum())
        counts[name] = {
            "images": len(rows),
            "emoji": len({groups[i] for i in rows}),
            "foreground %": round(100.0 * fg / max(len(rows) * SIZE * SIZE, 1), 2),
        }
    record = {"build": BUILD, "counts": counts, "seconds": round(time.time() - start, 1)}
    (tmp / ".built.json").write_text(json.dumps(record, indent=1))
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    print(f"built {root} in {time.time() - start:.0f} s", flush=True)
    return record


def load_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N×3×H×W images and int64 N×H×W class indices (0 background, 1 emoji) of one split."""
    paths = sorted((root / split / "images").glob("*.png"))
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    masks = [np.asarray(Image.open(root / split / "masks" / p.name)) for p in paths]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy((np.stack(masks) >= 128).astype(np.int64))
    return x, y


# --------------------------------------------------------------------------------------- the metric


def scores_of(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """Per-class IoU and Dice over every pixel of the split (tp, fp, fn summed over the images), their
    means over the 2 classes, and the emoji class's IoU alone. Checked against torchmetrics."""
    ious, dices = [], []
    for c in (0, 1):
        p, t = pred == c, true == c
        tp, fp, fn = (p & t).sum().item(), (p & ~t).sum().item(), (~p & t).sum().item()
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else float("nan"))
        dices.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"))
    jaccard = MulticlassJaccardIndex(num_classes=2, average="none")
    check = jaccard(pred.reshape(len(pred), -1), true.reshape(len(true), -1)).double().numpy()
    assert np.allclose(check, ious, atol=1e-5), (check, ious)
    return {"iou": float(np.nanmean(ious)), "fg_iou": ious[1], "dice": float(np.nanmean(dices))}


def predict(model: nn.Module, x: torch.Tensor, norm) -> torch.Tensor:
    """The most probable class of every pixel, N×H×W."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(norm(x[i : i + 256])).argmax(1) for i in range(0, len(x), 256)])


def normaliser(mean, std):
    mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(std).view(1, 3, 1, 1) * 255
    return lambda x: (x.float() - mean) / std


# ------------------------------------------------------------------------------------------ runners


def plain_loop(data: dict, seed: int, epochs: int) -> dict[str, float]:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    (xt, yt), (xv, yv), (xs, ys) = data["train"], data["valid"], data["test"]
    model = smp.create_model("Unet", encoder_name=ENCODER, encoder_weights=None, classes=2, **UNET_KWARGS)
    norm = normaliser(timm.data.IMAGENET_DEFAULT_MEAN, timm.data.IMAGENET_DEFAULT_STD)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(xt, yt), batch_size=BATCH, shuffle=True
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=epochs * len(loader))
    dice, ce = smp.losses.DiceLoss(mode="multiclass"), nn.CrossEntropyLoss()
    best, best_state = -1.0, None
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            flip = torch.rand(len(x)) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            y = torch.where(flip.view(-1, 1, 1), y.flip(2), y)
            optimizer.zero_grad()
            logits = model(norm(x))
            (dice(logits, y) + ce(logits, y)).backward()
            optimizer.step()
            scheduler.step()
        value = scores_of(predict(model, xv, norm), yv)["iou"]
        if value > best:
            best, best_state = value, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    test = scores_of(predict(model, xs, norm), ys)
    return {"valid_iou": best, **{f"test_{k}": v for k, v in test.items()}}


def segmentation_config(root: Path, seed: int, epochs: int) -> Config:
    """The mlic config of the recipe: what a user writes for it."""
    return Config(
        experiment_name=f"segmentation_{seed}",
        task="segmentation",
        seed=seed,
        data=Data(
            root=str(root),
            train="train",
            valid="valid",
            test="test",
            classes=dict(CLASSES),
            img_size=(SIZE, SIZE),
            batch_size=BATCH,
            num_workers=0,
            augmentations=A.HorizontalFlip(p=0.5),
        ),
        model=Model(name="Unet", encoder=ENCODER, pretrained=False, kwargs=dict(UNET_KWARGS)),
        optimizer=partial(torch.optim.AdamW, lr=LR, weight_decay=1e-2),
        stages=[Stage("full", epochs=epochs, lr=LR)],
        save_top_k=1,
        trainer=dict(enable_progress_bar=False, enable_model_summary=False),
        output_dir=OUTPUT_DIR,
    )


def mlic_run(root: Path, data: dict, seed: int, epochs: int) -> dict[str, float]:
    config = segmentation_config(root, seed, epochs)
    shutil.rmtree(config.experiment_dir, ignore_errors=True)  # this bench's own folder under /tmp
    result = run(config)
    valid = float(pd.read_csv(result.exp_dir / "metrics.csv")["valid/iou"].max())
    best = load_model_file(result.exp_dir / "model.best.pth")
    xs, ys = data["test"]
    assert tuple(best.prep.img_size) == (SIZE, SIZE) and best.classes == list(CLASSES), best
    test = scores_of(predict(best.model, xs, normaliser(best.prep.mean, best.prep.std)), ys)
    return {
        "valid_iou": valid,
        **{f"test_{k}": v for k, v in test.items()},
        "mlic_test_iou": float(result.results["test"]["iou"]),
        "mlic_test_dice": float(result.results["test"]["dice"]),
    }


def chance(data: dict) -> dict[str, dict[str, float]]:
    """Test scores of masks that ignore the image."""
    yt, ys = data["train"][1], data["test"][1]
    n, h, w = ys.shape
    area = yt.float().mean().item() * h * w  # mean train foreground pixels per image
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    side = area**0.5
    square = ((yy - h / 2).abs() < side / 2) & ((xx - w / 2).abs() < side / 2)
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < area / np.pi
    majority = yt.float().mean(0) >= 0.5
    fixed = {
        "all background": torch.zeros(h, w, dtype=torch.bool),
        f"centred square {side:.1f} px": square,
        f"centred disc r {(area / np.pi) ** 0.5:.1f} px": disc,
        "per-pixel train majority": majority,
    }
    return {k: scores_of(v.long().expand(n, h, w), ys) for k, v in fixed.items()}


def describe(record: dict, data: dict) -> None:
    counts = pd.DataFrame(record["counts"]).T.astype({"images": int, "emoji": int})
    print(
        f"emoji on backgrounds ({ROOT}): {counts['images'].sum()} images of {counts['emoji'].sum()} emoji by "
        f"{len(VENDORS)} vendors, {SIZE}×{SIZE}, emoji side {SCALE[0]}-{SCALE[1]} px; built in "
        f"{record['seconds']} s"
    )
    print(counts.to_string())
    for split, (x, _) in data.items():
        assert len(x) == record["counts"][split]["images"], split


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    suite.quiet()
    started = time.time()
    record = build_data()
    data = {s: load_split(ROOT, s) for s in _suite.SPLITS}
    describe(record, data)
    rows = []
    for seed in args.seeds:
        for name, fn in (
            ("plain loop", lambda s=seed: plain_loop(data, s, args.epochs)),
            ("mlic", lambda s=seed: mlic_run(ROOT, data, s, args.epochs)),
        ):
            start = time.time()
            result = fn()
            rows.append({"runner": name, "seed": seed, **result, "seconds": time.time() - start})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    print("\nchance on test (mean IoU over the 2 classes, emoji IoU, mean Dice):")
    print(pd.DataFrame(chance(data)).T.to_string(float_format=lambda v: f"{v:.4f}"))
    print(
        f"\nemoji segmentation, Unet/{ENCODER} from scratch, {args.epochs} epochs, seeds {args.seeds} "
        f"(test_* from the predicted masks; mlic_test_* as mlic reports them):"
    )
    columns = [
        "valid_iou",
        "test_iou",
        "test_fg_iou",
        "test_dice",
        "mlic_test_iou",
        "mlic_test_dice",
        "seconds",
    ]
    summary = df.groupby("runner", sort=False)[columns].agg(["mean", "std"])
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"total {time.time() - started:.0f} s, torch threads {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
