"""Split one label table into train/valid/test tables in the course layout, stratified over all labels.

`python -m mlic.split --csv movies.csv --out data/posters` reads one table, either one-hot (an id column
plus one 0/1 column per class) or genre names (`--label-column Genre`, names separated by
`--label-separator`), and writes `train_df.csv`, `valid_df.csv` and `test_df.csv` into the output folder
(no test table with `--test 0`). Rows are assigned with iterative multi-label stratification (Sechidis et
al., 2011, from the `iterative-stratification` package): first the test rows are taken off the whole
table, then the valid rows off the rest, so every class keeps about its share in every split.

Every output table is the course one-hot layout: the input's id column and one 0/1 column per class,
nothing else (titles, years and other columns are dropped). Classes keep the order of their columns in a
one-hot table and are sorted by name for genre names. Rows keep their input order within each split.

Nothing is written when a check fails: duplicate or empty ids, bad fractions, existing outputs without
`--force`, or a class left without an example in some split without `--allow-empty-classes`. The three
tables are written to temporary files first and renamed into place together, so an interrupted run never
leaves a half-written table. The same table, fractions and seed always give the same split.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd

from mlic.config.schema import Data
from mlic.data.labels import genre_targets, onehot_targets, read_csv_file
from mlic.data.stratify import stratified_take
from mlic.utils.cli import run_cli
from mlic.utils.errors import DataError, MlicError
from mlic.utils.io import atomic_path

SPLITS = ("train", "valid", "test")
FILE_NAMES = {split: f"{split}_df.csv" for split in SPLITS}

# The table reader's hints name config fields; on this command line the same settings are options.
_CLI_WORDING = {
    "set data.label_column=": "pass --label-column ",
    "set data.label_column": "pass --label-column",
    "set data.id_column": "pass --id-column",
    "data.ignore_columns": "--ignore-columns",
}


# ------------------------------------------------------------------------------------------ splitting


def check_options(valid: float, test: float, seed: int) -> None:
    """Raise MlicError unless 0 < valid, 0 <= test, valid + test < 1 (the rest is train) and the seed fits."""
    if not (0 < valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise MlicError(
            f"--valid must be above 0 and --test 0 or above, with --valid + --test below 1 "
            f"(the rest is train); got --valid {valid} and --test {test}"
        )
    if not 0 <= seed < 2**32:
        raise MlicError(f"--seed must be between 0 and 2**32 - 1, got {seed}")


def split_table(
    targets: np.ndarray, valid: float, test: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices (sorted) of train, valid and test for a rows × classes 0/1 matrix.

    Test takes about `test` of the rows (none when `test` is 0), valid about `valid` of the whole from
    what is left; the same inputs and seed always give the same split.
    """
    check_options(valid, test, seed)
    targets = np.asarray(targets)
    if targets.ndim != 2 or targets.shape[1] == 0:
        raise DataError(f"targets must be a rows × classes matrix, got shape {targets.shape}")
    n = len(targets)
    rng = np.random.RandomState(seed)
    rest, test_rows = np.arange(n), np.arange(0)
    try:
        if test > 0:
            rest, test_rows = stratified_take(targets, rest, test, rng)
        train_rows, valid_rows = stratified_take(targets, rest, valid / (1 - test), rng)
    except ValueError:  # the splitter refuses fractions that leave a side empty
        train_rows, valid_rows = np.arange(0), np.arange(0)
    sizes = {"train": len(train_rows), "valid": len(valid_rows), "test": len(test_rows)}
    if sizes["train"] == 0 or sizes["valid"] == 0 or (test > 0 and sizes["test"] == 0):
        wanted = "train, valid and test" if test > 0 else "train and valid"
        raise DataError(
            f"the table has {n} row(s), too few to give {wanted} at least one row each with "
            f"--valid {valid} and --test {test}; add rows or change --valid and --test"
        )
    return train_rows, valid_rows, test_rows


# ------------------------------------------------------------------------------------------- reading


def _read_frame(path: Path, id_column: str) -> pd.DataFrame:
    """The table as strings-for-ids, checked for a usable, non-empty and unique id column."""
    df = read_csv_file(path, "input table", "pass the label table's path with --csv", dtype={id_column: str})
    if id_column not in df.columns:
        raise DataError(
            f"input table {path} has no '{id_column}' column (columns: {', '.join(map(str, df.columns))}); "
            f"pass --id-column with the column that names the images"
        )
    _check_ids(df[id_column].astype(str), path, id_column)
    return df


def _check_ids(ids: pd.Series, path: Path, id_column: str) -> None:
    """Raise DataError for an empty id or for the first id that appears twice (CSV lines, header = 1)."""
    empty = np.flatnonzero((ids.str.strip() == "").to_numpy())
    if len(empty):
        raise DataError(f"input table {path}, line {empty[0] + 2}: empty '{id_column}'")
    duplicated = ids.duplicated(keep=False).to_numpy()
    if duplicated.any():
        first = ids.iloc[int(np.flatnonzero(duplicated)[0])]
        lines = [str(i + 2) for i in np.flatnonzero((ids == first).to_numpy())]
        shown = ", ".join(lines[:5]) + (f" and {len(lines) - 5} more" if len(lines) > 5 else "")
        raise DataError(
            f"input table {path}: id {first!r} appears {len(lines)} times, on lines {shown} "
            f"(header = line 1); ids must be unique so that no image lands in two splits"
        )


def _guess_options(path: Path, separator: str) -> str | None:
    """`--id-column X --label-column Y` for a table of separator-joined names (MovieGenre's imdbId, Title,
    Genre = "Drama|Comedy"), read from its content; None when it does not look like one."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return None
    columns = [str(c) for c in df.columns]
    joined = [c for c in columns if df[c].str.contains(separator, regex=False).mean() >= 0.2]
    unique = [c for c in columns if c not in joined and df[c].is_unique and (df[c].str.strip() != "").all()]
    if not joined or not unique:
        return None
    id_column = next((c for c in unique if "id" in c.lower()), unique[0])
    return f"--id-column {id_column} --label-column {joined[0]}"


def read_labels(
    path: str | Path,
    id_column: str = "Id",
    label_column: str | None = None,
    label_separator: str = "|",
    ignore_columns: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read (ids, float32 0/1 targets, classes) from a one-hot table, or from genre names with `label_column`.

    Uses the training reader's label parsing (`mlic.data.loaders`) but never looks for images.
    """
    path = Path(path)
    cfg = Data(
        root=".",
        id_column=id_column,
        label_column=label_column,
        label_separator=label_separator,
        ignore_columns=list(ignore_columns),
    )
    try:
        df = _read_frame(path, id_column)
        if label_column is not None:
            targets, classes = genre_targets(df, path, cfg, None)
        else:
            targets, classes = onehot_targets(df, path, cfg, None)
    except DataError as e:
        message = str(e)
        for config_words, option in _CLI_WORDING.items():
            message = message.replace(config_words, option)
        guess = _guess_options(path, label_separator) if label_column is None else None
        if guess:
            raise DataError(f"{message}; this looks like a table of label names: try {guess}") from None
        if "labels must be 0 or 1" in message and "--label-column" not in message:
            message += "; list columns that are not classes (titles, years) with --ignore-columns"
        raise DataError(message) from None
    if id_column in classes:
        raise DataError(f"input table {path}: a class is named like the id column '{id_column}'")
    return df[id_column].astype(str).to_numpy(), targets, classes


# ------------------------------------------------------------------------------------------ checking


def format_counts(classes: Sequence[str], targets: np.ndarray, parts: dict[str, np.ndarray]) -> str:
    """A table of examples per class in the whole table and in each split, with a last row of split sizes."""
    header = ["class", "whole", *parts]
    rows = [
        [name, int(targets[:, c].sum()), *(int(targets[idx, c].sum()) for idx in parts.values())]
        for c, name in enumerate(classes)
    ]
    rows.append(["(rows)", len(targets), *(len(idx) for idx in parts.values())])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list) -> str:
        cells = [str(row[0]).ljust(widths[0])] + [str(v).rjust(w) for v, w in zip(row[1:], widths[1:])]
        return "  ".join(cells).rstrip()

    return "\n".join(line(row) for row in [header, *rows])


def empty_classes(classes: Sequence[str], targets: np.ndarray, parts: dict[str, np.ndarray]) -> list[str]:
    """'Name (N in total, none in valid)' for every class that has no example in some split."""
    found = []
    for c, name in enumerate(classes):
        missing = [split for split, idx in parts.items() if targets[idx, c].sum() == 0]
        if missing:
            total = int(targets[:, c].sum())
            found.append(
                f"{name} ({total} example{'s' if total != 1 else ''} in total, none in {', '.join(missing)})"
            )
    return found


def _empty_message(found: list[str], n_splits: int) -> str:
    return (
        f"the split leaves {len(found)} class(es) without an example in some split: {'; '.join(found)}; "
        f"a class needs an example in each of the {n_splits} splits, so at least {n_splits} in total and "
        f"more where the fractions are small"
    )


def _check_outputs(out: Path, names: Sequence[str], stale: Sequence[str], force: bool) -> list[Path]:
    """Refuse existing outputs without `force`; return stale tables that `force` will delete."""
    if out.exists() and not out.is_dir():
        raise MlicError(f"--out {out} is a file; it must be a folder (created if missing)")
    for name in names:
        if (out / name).exists() and not force:
            raise MlicError(f"{out / name} already exists; pass --force to overwrite it")
    old = [out / name for name in stale if (out / name).exists()]
    if old and not force:
        raise MlicError(
            f"{old[0]} exists but --test 0 writes no test table, so it would be left over from another "
            f"split; pass --force to delete it"
        )
    return old


# ------------------------------------------------------------------------------------------- writing


def write_splits(
    out: Path,
    id_column: str,
    ids: np.ndarray,
    targets: np.ndarray,
    classes: Sequence[str],
    parts: dict[str, np.ndarray],
) -> list[Path]:
    """Write one course-layout table per split, all to temporary files first, then rename them into place."""
    paths = []
    with ExitStack() as stack:
        for split, idx in parts.items():
            frame = pd.DataFrame(targets[idx].astype(np.int64), columns=list(classes))
            frame.insert(0, id_column, ids[idx])
            path = out / FILE_NAMES[split]
            frame.to_csv(stack.enter_context(atomic_path(path)), index=False)
            paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlic.split", description=__doc__.split("\n")[0])
    parser.add_argument("--csv", type=Path, required=True, help="the label table to split")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for the split tables (created if missing)"
    )
    parser.add_argument("--id-column", default="Id", help="the column that names the images (default: Id)")
    parser.add_argument(
        "--label-column",
        default=None,
        help="a column of genre names (e.g. Genre); without it the table is one-hot (a 0/1 column per class)",
    )
    parser.add_argument(
        "--label-separator", default="|", help="separator of names in --label-column (default: |)"
    )
    parser.add_argument(
        "--ignore-columns",
        nargs="+",
        default=[],
        metavar="COLUMN",
        help="columns of a one-hot table that are not classes (e.g. Title Year); they are not written",
    )
    parser.add_argument(
        "--valid", type=float, default=0.15, help="fraction of rows for valid (default: 0.15)"
    )
    parser.add_argument(
        "--test",
        type=float,
        default=0.15,
        help="fraction of rows for test (default: 0.15); 0 writes no test_df.csv",
    )
    parser.add_argument(
        "--seed", type=int, default=42, help="the same seed gives the same split (default: 42)"
    )
    parser.add_argument(
        "--allow-empty-classes",
        action="store_true",
        help="write the split even if a class has no example in some split (a warning instead of an error)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing split tables in --out")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return parser.parse_args(argv)


def _run(args: argparse.Namespace) -> int:
    check_options(args.valid, args.test, args.seed)
    names = [FILE_NAMES[s] for s in SPLITS if s != "test" or args.test > 0]
    stale = [] if args.test > 0 else [FILE_NAMES["test"]]
    old = _check_outputs(args.out, names, stale, args.force)
    ids, targets, classes = read_labels(
        args.csv, args.id_column, args.label_column, args.label_separator, args.ignore_columns
    )
    rows = split_table(targets, args.valid, args.test, args.seed)
    parts = {split: idx for split, idx in zip(SPLITS, rows) if split != "test" or args.test > 0}
    n = len(targets)
    sizes = ", ".join(f"{split} {len(idx)} ({len(idx) / n:.1%})" for split, idx in parts.items())
    noun = "class" if len(classes) == 1 else "classes"
    print(f"{args.csv}: {n} rows, {len(classes)} {noun}; seed {args.seed}: {sizes}")
    print(format_counts(classes, targets, parts))
    found = empty_classes(classes, targets, parts)
    if found and not args.allow_empty_classes:
        raise MlicError(
            f"{_empty_message(found, len(parts))}; add examples, drop those classes, "
            f"or pass --allow-empty-classes to write the split anyway"
        )
    if found:
        print(f"warning: {_empty_message(found, len(parts))} (kept: --allow-empty-classes)", file=sys.stderr)
    try:
        written = write_splits(args.out, args.id_column, ids, targets, classes, parts)
        for path in old:
            path.unlink()
    except OSError as e:
        raise MlicError(f"cannot write the split tables into {args.out}: {e.strerror or e}") from None
    print(f"wrote {', '.join(p.name for p in written)} to {args.out}")
    for path in old:
        print(f"deleted {path}, left over from another split (--test 0 writes no test table)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0, or 2 after printing `error: <sentence>` for a user mistake."""
    args = parse_args(argv)
    return run_cli(lambda: _run(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
