"""The decoded-image cache (`Data(cache=...)`): the same batches as reading from disk, within its memory
budget, and one sentence when the data does not fit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import albumentations as A
import pytest
import torch
from conftest import REPO, make_dataset

from mlic import ConfigError, Data
from mlic.data.cache import cache_bytes, cache_images
from mlic.data.images import Preprocessing
from mlic.data.loaders import make_loader
from mlic.data.tables import read_splits

PREP = Preprocessing(img_size=(24, 20), mean=(0.5,) * 3, std=(0.25,) * 3, interpolation="bicubic")


def _augmentations() -> A.Compose:
    return A.Compose([A.HorizontalFlip(p=0.5), A.GaussNoise(std_range=(0.1, 0.3), p=0.5)])


def _batches(cfg: Data, tables: dict, split: str, epochs: int = 2) -> list[torch.Tensor]:
    """Every batch of `epochs` epochs of `split` (the train split augmented and shuffled), seed 0."""
    train = split == "train"
    transform = PREP.transform(_augmentations() if train else None)
    torch.manual_seed(0)
    loader = make_loader(tables[split], transform, cfg, train=train, seed=3)
    return [torch.cat([torch.cat([x.flatten(1), y], 1) for x, y in loader]) for _ in range(epochs)]


@pytest.mark.parametrize("workers", [0, 2])
def test_cached_images_give_the_batches_that_reading_from_disk_gives(dataset, workers):
    cfg = Data(root=str(dataset), batch_size=8, num_workers=workers, num_iteration_on_epoch=4)
    from_disk = read_splits(cfg)
    cached = read_splits(cfg)
    assert cache_images(cfg, cached, PREP)
    assert all(t.images is not None and t.images.shape == (len(t), 24, 20, 3) for t in cached.values())
    for split in ("train", "valid"):
        expected, got = _batches(cfg, from_disk, split), _batches(cfg, cached, split)
        assert all(torch.equal(a, b) for a, b in zip(expected, got)), split
    assert not torch.equal(*_batches(cfg, cached, "train"))  # epochs still differ


def test_the_cache_keeps_within_its_memory_budget(dataset):
    tables = read_splits(Data(root=str(dataset)))
    need = cache_bytes(tables, PREP.img_size)
    assert need == 96 * 24 * 20 * 3  # 48 + 24 + 24 images
    roomy = Data(root=str(dataset), cache=True, cache_memory=need / 1024**3)
    assert cache_images(roomy, tables, PREP)
    assert sum(t.images.nbytes for t in tables.values()) == need
    # "auto" reads from disk when the images do not fit
    tables = read_splits(Data(root=str(dataset)))
    tight = Data(root=str(dataset), cache="auto", cache_memory=(need - 1) / 1024**3)
    assert not cache_images(tight, tables, PREP)
    assert all(t.images is None for t in tables.values())
    # False never caches, whatever fits
    assert not cache_images(Data(root=str(dataset), cache=False), tables, PREP)


def test_a_cache_that_must_hold_data_that_does_not_fit_is_an_error(dataset):
    tables = read_splits(Data(root=str(dataset)))
    cfg = Data(root=str(dataset), cache=True, cache_memory=1e-6)
    with pytest.raises(
        ConfigError,
        match=r"field 'data.cache': the 96 images at 24x20 take 0\.1 MB, over the cache's budget of 0\.0 MB",
    ):
        cache_images(cfg, tables, PREP)


def test_train_py_stops_with_one_sentence_when_the_cache_does_not_fit(tmp_path):
    make_dataset(tmp_path / "data", n_train=16, n_valid=8, n_test=8)
    (tmp_path / "config.py").write_text(
        "from mlic import Config, Data, Model, env_path\n"
        "config = Config(experiment_name='c', data=Data(root=env_path(), img_size=(32, 32), num_workers=0,"
        " cache=True, cache_memory=0.00001), model=Model(name='test_resnet', pretrained=False),"
        " trainer=dict(accelerator='cpu'))\n"
    )
    env = dict(os.environ, ROOT_PATH=str(tmp_path / "data"))
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "config.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: field 'data.cache': the 32 images at 32x32 take 0.1 MB, over the cache's")
    assert "data.cache=False" in line
    assert not Path(tmp_path / "experiments").exists()  # nothing written
