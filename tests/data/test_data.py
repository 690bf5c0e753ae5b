"""Loaders: exact iterations per epoch, per-worker/per-epoch augmentation seeds, transforms."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CLASSES

from mlic import Data
from mlic.data.images import ImageTransform, resize
from mlic.data.loaders import IterationSampler, make_loader
from mlic.data.tables import LabelTable, read_splits


def _same_image_table(tmp_path: Path, n: int = 16) -> LabelTable:
    """n rows that all show one image, so any difference between items comes from augmentation."""
    image = np.random.default_rng(0).integers(0, 255, size=(16, 16, 3), dtype=np.uint8)
    path = tmp_path / "same.png"
    cv2.imwrite(str(path), image)
    return LabelTable(
        source=tmp_path / "t.csv",
        ids=np.array([str(i) for i in range(n)]),
        paths=np.array([str(path)] * n),
        targets=np.zeros((n, 1), dtype=np.float32),
        classes=["x"],
    )


def _noise_augmentations() -> A.Compose:
    return A.Compose([A.GaussNoise(std_range=(0.2, 0.4), p=1.0)])


def _epochs(loader, n: int) -> list[torch.Tensor]:
    return [torch.cat([x for x, _ in loader]) for _ in range(n)]


def test_sampler_yields_exact_count_and_covers_items_evenly():
    sampler = IterationSampler(num_items=10, num_iterations=7, batch_size=3)
    torch.manual_seed(0)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(second) == 21
    counts = np.bincount(first + second, minlength=10)
    assert counts.min() >= 4 and counts.max() <= 5  # 42 draws over 10 items, cycling shuffles


def test_sampler_is_reproducible_with_a_seed():
    torch.manual_seed(3)
    a = [list(IterationSampler(10, 4, 5)) for _ in range(1)][0]
    torch.manual_seed(3)
    b = list(IterationSampler(10, 4, 5))
    assert a == b


def test_workers_get_different_augmentations_and_epochs_differ(tmp_path):
    table = _same_image_table(tmp_path)
    cfg = Data(root=str(tmp_path), batch_size=4, num_workers=2, num_iteration_on_epoch=4)
    transform = ImageTransform((16, 16), (0.5,) * 3, (0.5,) * 3, _noise_augmentations())
    torch.manual_seed(0)
    epoch1, epoch2 = _epochs(make_loader(table, transform, cfg, train=True), 2)
    # batches 0 and 1 come from different workers: their items must not repeat each other
    assert not torch.equal(epoch1[0:4], epoch1[4:8])
    assert not torch.equal(epoch1, epoch2)


def test_a_fixed_seed_reproduces_augmentations_with_workers(tmp_path):
    table = _same_image_table(tmp_path)
    cfg = Data(root=str(tmp_path), batch_size=4, num_workers=2, num_iteration_on_epoch=3)
    runs = []
    for _ in range(2):
        transform = ImageTransform((16, 16), (0.5,) * 3, (0.5,) * 3, _noise_augmentations())
        torch.manual_seed(0)
        runs.append(_epochs(make_loader(table, transform, cfg, train=True), 2))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("workers", [0, 2])
def test_each_process_of_a_job_augments_apart_and_the_first_as_alone(tmp_path, monkeypatch, workers):
    """RANK is what torchrun gives each process; the seed and torch's generator are the same in all."""
    table = _same_image_table(tmp_path)
    cfg = Data(root=str(tmp_path), batch_size=4, num_workers=workers, num_iteration_on_epoch=2)
    epochs = {}
    for rank in ("", "0", "1"):
        monkeypatch.setenv("RANK", rank)
        transform = ImageTransform((16, 16), (0.5,) * 3, (0.5,) * 3, _noise_augmentations())
        torch.manual_seed(0)
        epochs[rank] = _epochs(make_loader(table, transform, cfg, train=True, seed=7), 1)[0]
    assert torch.equal(epochs[""], epochs["0"])  # the first process draws what a single one does
    assert not torch.equal(epochs["0"], epochs["1"])


def test_augmentations_accept_any_callable_on_uint8_arrays(tmp_path):
    table = _same_image_table(tmp_path, n=2)
    seen = []

    def flip(image: np.ndarray) -> np.ndarray:
        seen.append((image.dtype, image.shape))
        return image[:, ::-1]

    transform = ImageTransform((16, 16), (0.0,) * 3, (1 / 255,) * 3, flip)
    x = transform(cv2.cvtColor(cv2.imread(str(table.paths[0])), cv2.COLOR_BGR2RGB))
    assert seen == [(np.uint8, (16, 16, 3))]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32


def test_transform_resizes_and_normalises_like_the_model_expects():
    image = np.full((40, 30, 3), 255, dtype=np.uint8)
    x = ImageTransform((32, 24), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(image)
    assert x.shape == (3, 32, 24)
    assert torch.allclose(x, torch.full_like(x, 2.0))


def test_genre_string_layout_matches_the_onehot_layout(dataset):
    for split in ("train", "valid", "test"):
        df = pd.read_csv(dataset / f"{split}_df.csv", dtype={"Id": str})
        names = df[CLASSES].apply(lambda r: "|".join(c for c in CLASSES if r[c]), axis=1)
        df.assign(Genre=names)[["Id", "Genre"]].to_csv(dataset / f"{split}_genres.csv", index=False)
    onehot = read_splits(Data(root=str(dataset)))
    genres = read_splits(
        Data(
            root=str(dataset),
            train="train_genres.csv",
            valid="valid_genres.csv",
            test="test_genres.csv",
            label_column="Genre",
            classes=CLASSES,
        )
    )
    for split in onehot:
        assert genres[split].classes == onehot[split].classes
        assert np.array_equal(genres[split].targets, onehot[split].targets)
        assert list(genres[split].paths) == list(onehot[split].paths)


def test_image_pattern_and_id_column_are_configurable(dataset):
    for split in ("train", "valid", "test"):
        df = pd.read_csv(dataset / f"{split}_df.csv", dtype={"Id": str})
        df.rename(columns={"Id": "imdb_id"}).to_csv(dataset / f"{split}_ids.csv", index=False)
    (dataset / "posters").mkdir()
    for image in (dataset / "Images").iterdir():
        image.rename(dataset / "posters" / f"poster_{image.stem}.jpg")
    tables = read_splits(
        Data(
            root=str(dataset),
            images="posters",
            train="train_ids.csv",
            valid="valid_ids.csv",
            test="test_ids.csv",
            id_column="imdb_id",
            image_pattern="poster_{id}.jpg",
        )
    )
    assert all(Path(p).is_file() for p in tables["train"].paths)


def test_grey_and_rgba_images_decode_to_rgb(tmp_path):
    from mlic.data.images import read_rgb

    grey = tmp_path / "grey.png"
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(grey), np.full((5, 7), 100, dtype=np.uint8))
    cv2.imwrite(
        str(rgba),
        np.dstack([np.full((5, 7, 3), (10, 20, 30), dtype=np.uint8), np.full((5, 7), 255, np.uint8)]),
    )
    assert read_rgb(str(grey)).shape == (5, 7, 3)
    rgb = read_rgb(str(rgba))
    assert rgb.shape == (5, 7, 3) and tuple(rgb[0, 0]) == (30, 20, 10)  # stored BGR(A), returned RGB


# ---------------------------------------------------------------------------------- antialiased resize


def _stripes(height: int, width: int) -> np.ndarray:
    """One-pixel black and white vertical stripes: detail finer than any smaller image can hold."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, ::2] = 255
    return image


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_shrinking_averages_fine_detail_instead_of_aliasing_it(interpolation):
    image = _stripes(128, 128)
    out = ImageTransform((80, 80), (0.0,) * 3, (1 / 255,) * 3, None, interpolation)(image).numpy()
    # an antialiased resize turns stripes too fine to keep into (nearly) their average grey
    assert abs(out.mean() - 127.5) < 2 and out.std() < 15
    # what cv2.resize does with the same interpolation: the stripes turn into a moiré pattern
    code = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR}[interpolation]
    assert cv2.resize(image, (80, 80), interpolation=code).std() > 60


def test_growing_keeps_the_picture():
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = resize(image, (40, 60), "bicubic")
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert np.abs(out[::2, ::2].astype(int) - image).mean() < 40  # close to the pixels it grew from


def test_a_size_that_shrinks_one_side_and_grows_the_other_averages_the_shrinking_one():
    image = _stripes(20, 64)  # stripes across the width, which shrinks to a third; the height grows
    out = resize(image, (40, 21), "bicubic")
    assert out.shape == (40, 21, 3)
    assert abs(out.mean() - 127.5) < 3 and out[:, 1:-1].std() < 10


def test_an_image_of_the_right_size_is_not_touched():
    image = _stripes(16, 16)
    assert resize(image, (16, 16)) is image


def test_an_augmentation_may_edit_a_resized_image_in_place():
    def darken_corner(image):
        image[:4, :4] = 0  # as a hand-written augmentation might
        return image

    transform = ImageTransform((16, 16), (0.0,) * 3, (1 / 255,) * 3, darken_corner, "bicubic")
    x = transform(np.full((40, 40, 3), 200, dtype=np.uint8))
    assert float(x[:, :4, :4].max()) == 0.0 and float(x[:, 8:, 8:].min()) > 150
