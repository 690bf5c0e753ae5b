"""InsertBackground: the image, shrunk, pasted onto a random background, as an albumentations transform."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

from mlic import ConfigError, Stage
from mlic.data.augment import InsertBackground
from mlic.train.stages import run

RED, BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture
def backgrounds(tmp_path: Path) -> Path:
    folder = tmp_path / "backgrounds"
    folder.mkdir()
    for name, colour in (("red.png", RED), ("blue.jpg", BLUE)):
        image = np.full((40, 70, 3), colour, np.uint8)
        cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")
    return folder


def pasted_box(out: np.ndarray, value: int) -> tuple[int, int]:
    """Height and width of the region holding the pasted grey image (every channel == value)."""
    inside = (np.abs(out.astype(int) - value) <= 2).all(-1)
    rows, cols = np.nonzero(inside.any(1))[0], np.nonzero(inside.any(0))[0]
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_the_image_shrinks_within_max_ratio_and_the_rest_is_a_background(backgrounds: Path):
    transform = A.Compose([InsertBackground(backgrounds, max_ratio=0.4, p=1.0)], seed=0)
    image = np.full((50, 60, 3), 128, np.uint8)
    seen = set()
    for _ in range(30):
        out = transform(image=image)["image"]
        assert out.shape == image.shape and out.dtype == np.uint8
        h, w = pasted_box(out, 128)
        assert 0.6 * 50 - 1 <= h <= 50 and 0.6 * 60 - 1 <= w <= 60
        rest = out[(np.abs(out.astype(int) - 128) > 2).any(-1)].astype(int)
        near = {c: (np.abs(rest - c).max(-1) <= 3) for c in (RED, BLUE)}  # the JPEG one is off by a little
        assert len(rest) and (near[RED] | near[BLUE]).all(), "a pixel is neither image nor background"
        seen |= {c for c, hit in near.items() if hit.any()}
    assert seen == {RED, BLUE}, "both backgrounds should be drawn over 30 images"


def test_an_rgba_image_covers_the_background_only_where_it_is_opaque(backgrounds: Path):
    transform = A.Compose([InsertBackground(backgrounds, max_ratio=0.0, p=1.0)], seed=1)
    image = np.zeros((20, 20, 4), np.uint8)
    image[5:15, 5:15] = (0, 255, 0, 255)  # an opaque green square; the rest transparent
    out = transform(image=image)["image"]
    assert out.shape == (20, 20, 3)
    assert (out[5:15, 5:15] == (0, 255, 0)).all()
    corner = out[0, 0].astype(int)
    assert min(np.abs(corner - RED).max(), np.abs(corner - BLUE).max()) <= 3  # transparent: the background


def test_the_same_seed_draws_the_same_and_p_zero_changes_nothing(backgrounds: Path):
    image = np.random.default_rng(0).integers(0, 255, (30, 30, 3), dtype=np.uint8)
    a = A.Compose([InsertBackground(backgrounds, p=1.0)], seed=5)
    b = A.Compose([InsertBackground(backgrounds, p=1.0)], seed=5)
    assert all(np.array_equal(a(image=image)["image"], b(image=image)["image"]) for _ in range(5))
    never = A.Compose([InsertBackground(backgrounds, p=0.0)], seed=5)
    assert np.array_equal(never(image=image)["image"], image)


@pytest.mark.parametrize(
    ("folder", "message"),
    [("missing", "does not exist"), ("empty", "holds no image")],
)
def test_a_folder_without_backgrounds_is_one_sentence(tmp_path: Path, folder: str, message: str):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=f"backgrounds folder .*{folder} {message}"):
        InsertBackground(tmp_path / folder)


def test_training_with_backgrounds_in_a_worker(dataset: Path, backgrounds: Path):
    config = tiny_config(dataset, "backgrounds", stages=[Stage("full", epochs=1)])
    config.data.num_workers = 1
    config.data.augmentations = A.Compose([InsertBackground(backgrounds, max_ratio=0.3, p=0.5)])
    assert len(pd.read_csv(run(config).exp_dir / "metrics.csv")) == 1
