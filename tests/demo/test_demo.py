"""Tests for the offline demo dataset builder (small counts and a tiny backbone so they run in seconds)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import timm
import torch

from mlic.demo import build as demo
from mlic.demo import posters as demo_posters

SMALL = {"n_train": 60, "n_valid": 20, "n_test": 20, "model_name": "test_resnet", "pretrain_epochs": 1}


def _read_splits(out: Path) -> dict[str, pd.DataFrame]:
    return {s: pd.read_csv(out / f"{s}_df.csv", dtype={"Id": str}) for s in demo.SPLITS}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    demo.build_demo(out, seed=0, **SMALL)
    return out


def test_layout_and_csv_columns(built: Path) -> None:
    assert (built / "README.txt").read_text().strip()
    assert (built / "pretrained_test_resnet.pth").is_file()
    frames = _read_splits(built)
    assert {s: len(df) for s, df in frames.items()} == {"train": 60, "valid": 20, "test": 20}
    for df in frames.values():
        assert list(df.columns) == ["Id", *demo.GENRES]
        labels = df[demo.GENRES]
        assert all(pd.api.types.is_integer_dtype(t) for t in labels.dtypes)
        assert set(np.unique(labels.to_numpy())) <= {0, 1}
        per_poster = labels.sum(axis=1)
        assert per_poster.between(1, 3).all()


def test_every_id_has_an_rgb_image_of_poster_size(built: Path) -> None:
    for df in _read_splits(built).values():
        for poster_id in df["Id"]:
            img = cv2.imread(str(built / "Images" / f"{poster_id}.jpg"), cv2.IMREAD_UNCHANGED)
            assert img is not None and img.shape == (*demo.POSTER_SIZE, 3)
    assert len(list((built / "Images").iterdir())) == 100


def test_ids_unique_and_disjoint_across_splits(built: Path) -> None:
    ids = [set(df["Id"]) for df in _read_splits(built).values()]
    assert sum(map(len, ids)) == len(set.union(*ids)) == 100
    assert all(i.startswith("p") for i in set.union(*ids))


def test_weights_load_strictly_without_classifier(built: Path) -> None:
    state = torch.load(built / "pretrained_test_resnet.pth", weights_only=True)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    model.load_state_dict(state, strict=True)
    assert not any(k.startswith(model.default_cfg["classifier"]) for k in state)


def test_genre_frequencies_are_uneven() -> None:
    labels = demo_posters.sample_labels(demo.N_TRAIN, np.random.default_rng(0))
    freq = labels.mean(axis=0)
    assert labels.sum(axis=1).min() == 1 and labels.sum(axis=1).max() == 3
    assert 0.25 < freq[0] < 0.45  # Drama on about a third of the posters
    assert freq[-1] < 0.06  # Western rare
    assert freq[0] > 5 * freq[-1]
    assert np.all(np.diff(freq[::3]) < 0)  # falling from Drama through Thriller, Adventure to Western


def test_source_digit_pools_are_disjoint_and_stratified() -> None:
    _, digit_labels = demo.load_mnist()
    pools = demo.partition_digit_pools(digit_labels, seed=0)
    all_idx = np.concatenate(list(pools.values()))
    assert len(all_idx) == len(np.unique(all_idx)) == len(digit_labels)
    for split, expected in zip(demo.SPLITS, (350, 75, 75)):
        assert np.all(np.bincount(digit_labels[pools[split]], minlength=10) == expected)
    rng = np.random.default_rng(1)
    for pool in pools.values():
        plan = demo.plan_split(50, pool, digit_labels, rng)
        for row, src in zip(plan.labels, plan.sources):
            assert set(src) <= set(pool)  # posters only use their own split's digits
            assert sorted(digit_labels[src]) == list(np.flatnonzero(row))


def test_same_seed_gives_same_csvs(built: Path, tmp_path: Path) -> None:
    again = demo.build_demo(tmp_path / "again", seed=0, **SMALL)
    for split in demo.SPLITS:
        name = f"{split}_df.csv"
        assert (again / name).read_bytes() == (built / name).read_bytes()


def test_second_call_skips(built: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="mlic")
    marker = built / demo.MARKER
    stamp = marker.stat().st_mtime_ns
    start = time.perf_counter()
    demo.build_demo(built, seed=0, **SMALL)
    assert time.perf_counter() - start < 5
    assert "demo data already at" in caplog.text
    assert marker.stat().st_mtime_ns == stamp
    assert json.loads(marker.read_text())["counts"] == {"train": 60, "valid": 20, "test": 20}


def test_cli_skips_complete_build(built: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="mlic")
    argv = ["--out", str(built), "--train", "60", "--valid", "20", "--test", "20"]
    assert demo.main([*argv, "--model", "test_resnet", "--pretrain-epochs", "1"]) == 0
    assert "demo data already at" in caplog.text


def test_incomplete_or_different_build_is_not_reused(built: Path) -> None:
    params = demo.build_params(0, 60, 20, 20, "test_resnet", 1)
    assert demo.is_complete(built, params)
    assert not demo.is_complete(built, demo.build_params(1, 60, 20, 20, "test_resnet", 1))
    assert not demo.is_complete(built, demo.build_params(0, 60, 20, 21, "test_resnet", 1))
