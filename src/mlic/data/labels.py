"""Label tables' parts: a CSV with a header (one row per image), one-hot 0/1 class columns, a column of
separated class names, and a folder per class. Pure pandas/numpy; `mlic.data.tables` puts them together
as each task needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlic.config.schema import Data
from mlic.data.images import list_folder
from mlic.utils.errors import DataError


def read_csv_file(path: Path, what: str, missing_hint: str, dtype: Any = None) -> pd.DataFrame:
    """A CSV with a header and at least one row, or one DataError sentence naming `what` and the file."""
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise DataError(f"{what} {path} {state}; {missing_hint}")
    try:
        df = pd.read_csv(path, dtype=dtype, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{what} {path} is empty; it needs a header and one row per image") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{what} {path} is not a readable CSV: {e}") from None
    if len(df) == 0:
        raise DataError(f"{what} {path} has a header but no rows; it needs one row per image")
    return df


def read_label_csv(path: Path, id_column: str) -> pd.DataFrame:
    df = read_csv_file(
        path, "label table", "check data.root and the split's file name", dtype={id_column: str}
    )
    if id_column not in df.columns:
        raise DataError(
            f"label table {path} has no '{id_column}' column (columns: {', '.join(map(str, df.columns))}); "
            f"set data.id_column to the column that names the images"
        )
    ids = df[id_column].astype(str)
    if (ids.str.strip() == "").any():
        row = int(np.flatnonzero((ids.str.strip() == "").to_numpy())[0]) + 2
        raise DataError(f"label table {path}, row {row}: empty '{id_column}'")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(f"label table {path}: id {dup.iloc[0]!r} appears more than once")
    return df


def onehot_targets(df: pd.DataFrame, path: Path, cfg: Data, classes: list[str] | None) -> tuple:
    skip = {cfg.id_column, *cfg.ignore_columns}
    columns = [str(c) for c in df.columns if str(c) not in skip]
    if not columns:
        raise DataError(
            f"label table {path} has no label columns: it needs one 0/1 column per class beside "
            f"'{cfg.id_column}' (or set data.label_column for a column of '{cfg.label_separator}'-separated names)"
        )
    if classes is None:
        classes = columns
    else:
        missing = [c for c in classes if c not in columns]
        extra = [c for c in columns if c not in classes]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"lacks the class column(s) {', '.join(missing[:5])}")
            if extra:
                parts.append(f"has column(s) {', '.join(extra[:5])} that are not classes")
            raise DataError(
                f"label table {path} {' and '.join(parts)}; every split must have the same class columns "
                f"(or list non-label columns in data.ignore_columns)"
            )
    values = df[classes]
    for column in classes:
        col = values[column]
        numeric = pd.to_numeric(col, errors="coerce")
        bad = ~numeric.isin([0, 1])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            value = col.iloc[row]
            value = value.item() if hasattr(value, "item") else value
            hint = ""
            if col.astype(str).str.contains(cfg.label_separator, regex=False).any():
                hint = f"; for a column of genre names set data.label_column={column!r}"
            raise DataError(
                f"label table {path}, row {row + 2}, column {column!r}: labels must be 0 or 1, "
                f"got {value!r}{hint}"
            )
    targets = values.apply(pd.to_numeric).to_numpy(dtype=np.float32)
    return targets, list(classes)


def split_names(series: pd.Series, sep: str) -> list[list[str]]:
    return [[n.strip() for n in str(v).split(sep) if n.strip()] for v in series.tolist()]


def _label_column(df: pd.DataFrame, path: Path, cfg: Data, holding: str) -> str:
    """`data.label_column`, or one sentence when the table lacks it (`holding`: what it should hold)."""
    column = cfg.label_column
    if column not in df.columns:
        raise DataError(
            f"label table {path} has no '{column}' column (columns: {', '.join(map(str, df.columns))}); "
            f"set data.label_column to the column of {holding}"
        )
    return column


def genre_targets(df: pd.DataFrame, path: Path, cfg: Data, classes: list[str] | None) -> tuple:
    column = _label_column(df, path, cfg, f"'{cfg.label_separator}'-separated names")
    names = split_names(df[column], cfg.label_separator)
    if classes is None:
        classes = sorted({n for row in names for n in row})
        if not classes:
            raise DataError(f"label table {path}: column '{column}' holds no label names")
    return names_targets(names, path, classes, "genre", "add it to data.classes or fix the row"), list(
        classes
    )


def names_targets(names: list[list[str]], path: Path, classes: list[str], what: str, hint: str) -> np.ndarray:
    """One-hot targets of each row's class names; a name that is not a class names its row."""
    index = {c: i for i, c in enumerate(classes)}
    targets = np.zeros((len(names), len(classes)), dtype=np.float32)
    for row, row_names in enumerate(names):
        for n in row_names:
            if n not in index:
                known = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
                raise DataError(
                    f"label table {path}, row {row + 2}: unknown {what} {n!r} (known: {known}); {hint}"
                )
            targets[row, index[n]] = 1.0
    return targets


def image_paths(ids: np.ndarray, cfg: Data) -> np.ndarray:
    """Each id's image file: `data.root / data.images / data.image_pattern`."""
    image_dir = Path(cfg.root) / cfg.images
    return np.array([str(image_dir / cfg.image_pattern.format(id=i)) for i in ids])


def class_names(df: pd.DataFrame, path: Path, cfg: Data, classes: list[str] | None) -> tuple:
    """One-hot targets from `data.label_column` holding one class name per row (single-label)."""
    column = _label_column(df, path, cfg, "class names")
    names = [str(v).strip() for v in df[column].tolist()]
    empty = [i for i, n in enumerate(names) if not n]
    if empty:
        raise DataError(f"label table {path}, row {empty[0] + 2}: column '{column}' is empty")
    if classes is None:
        classes = sorted(set(names))
    targets = names_targets([[n] for n in names], path, classes, "class", "the train split fixes the classes")
    return targets, list(classes)


def one_class_per_row(targets: np.ndarray, path: Path) -> None:
    """Single-label one-hot columns: every row has exactly one 1."""
    counts = targets.sum(axis=1)
    bad = np.flatnonzero(counts != 1)
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"label table {path}, row {row + 2}: {int(counts[row])} classes are 1, but a single-label task "
            f"needs exactly one per row (use task='multi_label' for several)"
        )


def folder_labels(folder: Path, classes: list[str] | None) -> tuple:
    """(ids, image paths, one-hot targets, classes) of a folder with a subfolder of images per class
    (`train/<class>/*.jpg`). The ids are `<class>/<file name>`. Without `classes` (the train split)
    the classes are the subfolders' names, sorted; a class folder without images is an error. With
    `classes`, a subfolder that is not one of them is an error and a class without a folder has no
    images in this split."""
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise DataError(
            f"data folder {folder} has no class subfolders; a single-label split from folders holds one "
            f"subfolder of images per class (e.g. {folder}/cat/1.jpg)"
        )
    if classes is None:
        classes = [p.name for p in subfolders]
    known = set(classes)
    ids, paths, labels = [], [], []
    for sub in subfolders:
        if sub.name not in known:
            raise DataError(
                f"class folder {sub} is not one of the train split's classes ({', '.join(classes[:10])}"
                f"{', ...' if len(classes) > 10 else ''}); every split uses the train split's classes"
            )
        try:
            images = list_folder(sub)
        except DataError as e:
            raise DataError(f"class {e}; add its images or remove the folder") from None
        c = classes.index(sub.name)
        for image in images:
            ids.append(f"{sub.name}/{image.name}")
            paths.append(str(image))
            labels.append(c)
    targets = np.zeros((len(ids), len(classes)), dtype=np.float32)
    targets[np.arange(len(ids)), labels] = 1.0
    return np.array(ids), np.array(paths), targets, list(classes)
