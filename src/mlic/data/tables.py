"""One split's labels as a typed record (`LabelTable`), read as its task needs them, and the three
splits of a config read and checked together (`read_splits`). Every reader returns a `LabelTable`; the
tasks themselves read nothing."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mlic.config.schema import Data
from mlic.data.images import too_many_pixels
from mlic.data.labels import (
    class_names,
    folder_labels,
    genre_targets,
    image_paths,
    one_class_per_row,
    onehot_targets,
    read_label_csv,
)
from mlic.data.masks import Masks, segmentation_labels
from mlic.data.stratify import stratified_take
from mlic.tasks import Task, get_task
from mlic.utils.errors import DataError

log = logging.getLogger("mlic")
TargetsReader = Callable[[Any, Path, Data, "list[str] | None"], tuple]


@dataclass
class LabelTable:
    """One split: image ids, their image paths and a float32 0/1 target matrix (rows × classes)."""

    source: Path
    ids: np.ndarray
    paths: np.ndarray
    targets: np.ndarray
    classes: list[str]
    images: np.ndarray | None = (
        None  # decoded and resized (rows × H × W × 3 uint8) when cached (`mlic.data.cache`)
    )
    masks: Masks | None = None  # a segmentation split's masks; its `targets` are each class's pixel share

    def __len__(self) -> int:
        return len(self.ids)


def read_table(
    path: str | Path, cfg: Data, classes: list[str] | None = None, task: str | Task = "multi_label"
) -> LabelTable:
    """Read one split's labels as `task` needs them (a CSV; a folder per class for a single-label task;
    masks beside the images for segmentation); with `classes` given, check the split uses exactly those."""
    path = Path(path)
    return READERS[get_task(task).name](path, cfg, classes)


def _csv_table(path: Path, cfg: Data, classes: list[str] | None, targets_of: TargetsReader) -> LabelTable:
    """A label CSV's rows, its targets read by `targets_of(df, path, cfg, classes)`."""
    df = read_label_csv(path, cfg.id_column)
    targets, classes = targets_of(df, path, cfg, classes)
    ids = df[cfg.id_column].astype(str).to_numpy()
    return LabelTable(path, ids, image_paths(ids, cfg), targets, classes)


def multi_label_table(path: Path, cfg: Data, classes: list[str] | None) -> LabelTable:
    """A CSV of one-hot class columns, or of separated class names in `data.label_column`."""
    if path.is_dir():
        raise DataError(
            f"label table {path} is a folder: a folder per class gives one label per image, so set "
            f"task='single_label', or point the split at a label CSV"
        )
    return _csv_table(path, cfg, classes, genre_targets if cfg.label_column is not None else onehot_targets)


def single_label_table(path: Path, cfg: Data, classes: list[str] | None) -> LabelTable:
    """A folder per class, a CSV with one class name per row, or one-hot columns with one 1 per row."""
    if path.is_dir():
        ids, paths, targets, classes = folder_labels(path, classes)
        return LabelTable(path, ids, paths, targets, classes)
    if cfg.label_column is not None:
        return _csv_table(path, cfg, classes, class_names)
    table = _csv_table(path, cfg, classes, onehot_targets)
    one_class_per_row(table.targets, path)
    return table


def segmentation_table(path: Path, cfg: Data, classes: list[str] | None, multilabel: bool) -> LabelTable:
    """A label CSV or an image folder, with a mask per image (`mlic.data.masks`); the targets are each
    image's share of pixels per class."""
    ids, paths, targets, classes, masks = segmentation_labels(path, cfg, classes, multilabel)
    return LabelTable(path, ids, paths, targets, classes, masks=masks)


READERS: dict[str, Callable[[Path, Data, list[str] | None], LabelTable]] = {
    "multi_label": multi_label_table,
    "single_label": single_label_table,
    "segmentation": partial(segmentation_table, multilabel=False),
    "multilabel_segmentation": partial(segmentation_table, multilabel=True),
}


def check_images(table: LabelTable, max_pixels: int | None = Data.max_image_pixels) -> None:
    """Stop before training if images listed in the table are missing, not images at all, or, by their
    headers, have more than `max_pixels` pixels (`data.max_image_pixels`: none is decoded here)."""
    missing = [p for p in table.paths if not Path(p).is_file()]
    if missing:
        names = ", ".join(Path(p).name for p in missing[:3])
        raise DataError(
            f"{len(missing)} of {len(table)} images listed in {table.source} are missing under "
            f"{Path(missing[0]).parent} (first: {names}); check data.root, data.images and data.image_pattern"
        )
    # haveImageReader reads only the file's signature: cheap enough for every file before training.
    unreadable = [p for p in table.paths if not cv2.haveImageReader(str(p))]
    if unreadable:
        names = ", ".join(Path(p).name for p in unreadable[:3])
        raise DataError(
            f"{len(unreadable)} of {len(table)} images listed in {table.source} are not readable images "
            f"(first: {names}); replace them or remove their rows"
        )
    if max_pixels is None:
        return
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        refused = [r for r in pool.map(lambda p: too_many_pixels(p, max_pixels), table.paths) if r]
    if refused:
        more = len(refused) - 1
        raise DataError(
            refused[0] + (f"; {more} more listed in {table.source} are over it too" if more else "")
        )


def ids_name_files(a: LabelTable, b: LabelTable) -> bool:
    """Whether one id names one image file in both splits: two label tables (CSVs) take every image from
    `data.images`. A folder split's ids are file names in its own folder, so another split may use them
    for other images."""
    return not a.source.is_dir() and not b.source.is_dir()


def _digest(path: str) -> bytes:
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).digest()


def shared_images(a: LabelTable, b: LabelTable) -> list[tuple[str, str]]:
    """The images in both splits as (id in `a`, id in `b`), sorted: the same ids for two label tables
    (`ids_name_files`); otherwise files with the same bytes, whatever their names (only files of equal
    size are read and hashed)."""
    if ids_name_files(a, b):
        return [(i, i) for i in sorted(set(a.ids) & set(b.ids))]
    sizes_a, sizes_b = ([os.path.getsize(p) for p in t.paths] for t in (a, b))
    both = set(sizes_a) & set(sizes_b)
    rows_a = [k for k, n in enumerate(sizes_a) if n in both]
    rows_b = [k for k, n in enumerate(sizes_b) if n in both]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        digests_a = list(pool.map(_digest, a.paths[rows_a]))
        in_b = dict(zip(pool.map(_digest, b.paths[rows_b][::-1]), b.ids[rows_b][::-1]))  # the first id wins
    return sorted((str(a.ids[k]), str(in_b[d])) for k, d in zip(rows_a, digests_a) if d in in_b)


def train_fraction(table: LabelTable, fraction: float, seed: int) -> LabelTable:
    """About `fraction` of `table`'s rows, stratified on the labels: each class keeps about `fraction`
    of its positives (the same rows for the same seed)."""
    n = len(table)
    wanted = round(n * fraction)
    if wanted < 1:
        raise DataError(
            f"data.data_fraction {fraction} of the {n} rows of {table.source} is no row; raise data_fraction"
        )
    rng = np.random.RandomState(seed)
    # a segmentation table's targets are pixel shares: stratified on the classes each image shows
    labels = table.targets if table.masks is None else (table.targets > 0).astype(np.float32)
    try:  # stratified on each class's positives, so the row count is about `wanted`, not exactly
        _, rows = stratified_take(labels, np.arange(n), wanted / n, rng)
    except ValueError:  # too few rows for the stratified splitter: a plain random subset
        rows = np.sort(rng.permutation(n)[:wanted])
    log.info(
        "data.data_fraction %g: training on %d of the %d rows of %s (stratified)",
        fraction,
        len(rows),
        n,
        table.source.name,
    )
    masks = table.masks.subset(rows) if table.masks is not None else None
    return LabelTable(
        table.source, table.ids[rows], table.paths[rows], table.targets[rows], table.classes, masks=masks
    )


def read_splits(cfg: Data, seed: int = 0, task: str | Task = "multi_label") -> dict[str, LabelTable]:
    """Read train/valid/(test) tables of `task`; the class list is fixed by `cfg.classes` or the train table.
    With `cfg.data_fraction` below 1, train keeps that stratified share of its rows (drawn with `seed`)."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"data.root {root} is not a folder; set ROOT_PATH or data.root to the dataset folder")
    tables = {"train": read_table(root / cfg.train, cfg, cfg.classes, task)}
    classes = tables["train"].classes
    if cfg.data_fraction < 1.0:
        tables["train"] = train_fraction(tables["train"], cfg.data_fraction, seed)
    tables["valid"] = read_table(root / cfg.valid, cfg, classes, task)
    if cfg.test:
        tables["test"] = read_table(root / cfg.test, cfg, classes, task)
    for table in tables.values():
        check_images(table, cfg.max_image_pixels)
    return tables
