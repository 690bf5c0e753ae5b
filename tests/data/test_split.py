"""`python -m mlic.split`: stratified train/valid/test tables in the course layout from one label table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlic import Data, DataError, MlicError
from mlic.data.split import main, split_table
from mlic.data.tables import read_table

# Deliberately not in alphabetical order: one-hot outputs keep this order, genre-name outputs sort it.
CLASSES = ["Drama", "Comedy", "Action", "Thriller", "Romance", "Western"]
FREQUENCIES = [0.40, 0.25, 0.15, 0.10, 0.06, 0.03]
N_ROWS = 600
OUTPUTS = ("train_df.csv", "valid_df.csv", "test_df.csv")


def make_targets(n: int = N_ROWS, seed: int = 0) -> np.ndarray:
    """An imbalanced multi-label 0/1 matrix: class c is on with probability FREQUENCIES[c]."""
    rng = np.random.default_rng(seed)
    return (rng.random((n, len(CLASSES))) < FREQUENCIES).astype(np.int64)


def write_onehot(path: Path, targets: np.ndarray, classes: list[str] = CLASSES) -> pd.DataFrame:
    """Course layout plus two non-label columns (to be skipped with --ignore-columns)."""
    df = pd.DataFrame(targets, columns=classes)
    df.insert(0, "Id", [f"tt{i:07d}" for i in range(len(df))])
    df["Title"] = [f"Movie {i}" for i in range(len(df))]
    df["Year"] = 1990 + np.arange(len(df)) % 30
    df.to_csv(path, index=False)
    return df


def write_genres(path: Path, targets: np.ndarray) -> pd.DataFrame:
    """Genre-names layout: an imdb_id column and '|'-separated names (empty for rows with no label)."""
    genres = ["|".join(c for c, on in zip(CLASSES, row) if on) for row in targets]
    df = pd.DataFrame({"imdb_id": [f"tt{i:07d}" for i in range(len(targets))], "Genre": genres})
    df.to_csv(path, index=False)
    return df


def error_line(capsys: pytest.CaptureFixture) -> str:
    """The user-error contract: one line `error: <sentence>` on stderr and no traceback."""
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err


# ------------------------------------------------------------------------------------- split_table


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_split_keeps_every_class_share(seed: int) -> None:
    """Tolerance: every class's share of rows in each split is within 0.02 (absolute) of its share in the
    whole table, and the rarest class (3%, about 18 rows) has at least one example in every split."""
    targets = make_targets(seed=seed)
    whole = targets.mean(axis=0)
    for rows in split_table(targets, valid=0.15, test=0.15, seed=seed):
        assert np.abs(targets[rows].mean(axis=0) - whole).max() <= 0.02
        assert targets[rows].sum(axis=0).min() >= 1


def test_split_is_disjoint_covers_all_rows_and_has_the_asked_sizes() -> None:
    """Each row lands in exactly one split; valid and test hold 15% ± 1% of the rows each."""
    train, valid, test = split_table(make_targets(), valid=0.15, test=0.15, seed=0)
    everything = np.concatenate([train, valid, test])
    assert sorted(everything.tolist()) == list(range(N_ROWS))
    for rows in (valid, test):
        assert abs(len(rows) - 0.15 * N_ROWS) <= 0.01 * N_ROWS
    assert all(np.all(np.diff(rows) > 0) for rows in (train, valid, test))  # sorted, input order kept


def test_split_is_deterministic_per_seed() -> None:
    targets = make_targets()
    first = split_table(targets, 0.2, 0.1, seed=7)
    again = split_table(targets, 0.2, 0.1, seed=7)
    other = split_table(targets, 0.2, 0.1, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_split_without_test_and_with_one_class() -> None:
    """--test 0 gives an empty test split; a single class still splits (the splitter needs two columns)."""
    targets = make_targets()[:, :1]
    train, valid, test = split_table(targets, valid=0.25, test=0.0, seed=0)
    assert len(test) == 0
    assert len(train) + len(valid) == N_ROWS
    assert abs(len(valid) - 0.25 * N_ROWS) <= 0.01 * N_ROWS


def test_split_refuses_bad_fractions_and_tiny_tables() -> None:
    with pytest.raises(MlicError, match="--valid must be above 0"):
        split_table(make_targets(), valid=0.5, test=0.5, seed=0)
    with pytest.raises(DataError, match="too few"):
        split_table(make_targets(n=2), valid=0.15, test=0.15, seed=0)


# ----------------------------------------------------------------------------------- the command


def test_same_seed_writes_identical_files_and_another_seed_does_not(tmp_path: Path, capsys) -> None:
    write_onehot(tmp_path / "movies.csv", make_targets())
    base = ["--csv", "movies.csv", "--ignore-columns", "Title", "Year"]
    assert main([*base, "--out", "a", "--seed", "3"]) == 0
    assert main([*base, "--out", "b", "--seed", "3"]) == 0
    assert main([*base, "--out", "c", "--seed", "4"]) == 0
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert any((tmp_path / "a" / n).read_bytes() != (tmp_path / "c" / n).read_bytes() for n in OUTPUTS)
    out = capsys.readouterr().out
    assert "class     whole  train  valid  test" in out
    assert "(rows)      600    420     90    90" in out


def _check_course_layout(out: Path, id_column: str, source: pd.DataFrame, classes: list[str]) -> None:
    """The three tables read back with the training reader: same classes, disjoint ids covering the input,
    and every row's labels as in the input."""
    expected = make_targets()
    ids_seen: list[str] = []
    for name in OUTPUTS:
        df = pd.read_csv(out / name, dtype={id_column: str})
        assert list(df.columns) == [id_column, *classes]
        table = read_table(out / name, Data(root=str(out), id_column=id_column), classes)
        assert table.classes == classes
        rows = pd.Index(source[id_column]).get_indexer(table.ids)
        order = [CLASSES.index(c) for c in classes]
        assert np.array_equal(table.targets, expected[rows][:, order])
        ids_seen.extend(table.ids)
    assert sorted(ids_seen) == sorted(source[id_column])


def test_command_line_on_both_layouts(tmp_path: Path) -> None:
    """End to end in subprocesses (run side by side): one-hot with ignored columns, and genre names."""
    onehot = write_onehot(tmp_path / "movies.csv", make_targets())
    genres = write_genres(tmp_path / "genres.csv", make_targets())
    commands = {
        "onehot": ["--csv", "movies.csv", "--ignore-columns", "Title", "Year"],
        "genres": ["--csv", "genres.csv", "--id-column", "imdb_id", "--label-column", "Genre"],
    }
    running = {
        name: subprocess.Popen(
            [sys.executable, "-m", "mlic.split", *args, "--out", name],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }
    for process in running.values():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert "wrote train_df.csv, valid_df.csv, test_df.csv" in stdout
    _check_course_layout(tmp_path / "onehot", "Id", onehot, CLASSES)
    _check_course_layout(tmp_path / "genres", "imdb_id", genres, sorted(CLASSES))


def test_test_zero_writes_no_test_table(tmp_path: Path, capsys) -> None:
    write_onehot(tmp_path / "movies.csv", make_targets())
    argv = ["--csv", "movies.csv", "--ignore-columns", "Title", "Year", "--out", "out"]
    assert main([*argv, "--valid", "0.2", "--test", "0"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["train_df.csv", "valid_df.csv"]
    assert "test" not in capsys.readouterr().out.splitlines()[1]  # no test column in the counts


def test_stale_test_table_is_refused_then_deleted_with_force(tmp_path: Path, capsys) -> None:
    """With --test 0 an old test_df.csv would overlap the new train rows: refused, deleted with --force."""
    write_onehot(tmp_path / "movies.csv", make_targets())
    argv = ["--csv", "movies.csv", "--ignore-columns", "Title", "Year", "--out", "out"]
    assert main(argv) == 0
    capsys.readouterr()
    for name in OUTPUTS[:2]:
        (tmp_path / "out" / name).unlink()
    assert main([*argv, "--test", "0"]) == 2
    assert "test_df.csv exists but --test 0 writes no test table" in error_line(capsys)
    assert not (tmp_path / "out" / "train_df.csv").exists()
    assert main([*argv, "--test", "0", "--force"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["train_df.csv", "valid_df.csv"]


# ---------------------------------------------------------------------------------------- refusals


def test_class_with_one_example_is_refused_unless_allowed(tmp_path: Path, capsys) -> None:
    targets = make_targets()
    rare = np.zeros((N_ROWS, 1), dtype=np.int64)
    rare[10] = 1
    write_onehot(tmp_path / "movies.csv", np.hstack([targets, rare]), [*CLASSES, "Documentary"])
    argv = ["--csv", "movies.csv", "--ignore-columns", "Title", "Year", "--out", "out"]
    assert main(argv) == 2
    err = error_line(capsys)
    assert "Documentary (1 example in total, none in valid, test)" in err
    assert "--allow-empty-classes" in err
    assert not (tmp_path / "out").exists()

    assert main([*argv, "--allow-empty-classes"]) == 0
    assert "warning: " in capsys.readouterr().err
    assert all((tmp_path / "out" / name).is_file() for name in OUTPUTS)


def test_existing_outputs_are_kept_without_force(tmp_path: Path, capsys) -> None:
    write_onehot(tmp_path / "movies.csv", make_targets())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "valid_df.csv").write_text("Id,Drama\nold,1\n")
    argv = ["--csv", "movies.csv", "--ignore-columns", "Title", "Year", "--out", "out"]
    assert main(argv) == 2
    assert "valid_df.csv already exists; pass --force" in error_line(capsys)
    assert (tmp_path / "out" / "valid_df.csv").read_text() == "Id,Drama\nold,1\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["valid_df.csv"]

    assert main([*argv, "--force"]) == 0
    assert len((tmp_path / "out" / "valid_df.csv").read_text().splitlines()) == 91


def test_duplicate_ids_are_refused_with_their_lines(tmp_path: Path, capsys) -> None:
    df = write_onehot(tmp_path / "movies.csv", make_targets())
    df.loc[[5, 20], "Id"] = "tt9999999"  # rows 5 and 20 sit on CSV lines 7 and 22
    df.to_csv(tmp_path / "movies.csv", index=False)
    assert main(["--csv", "movies.csv", "--ignore-columns", "Title", "Year", "--out", "out"]) == 2
    assert "id 'tt9999999' appears 2 times, on lines 7, 22 (header = line 1)" in error_line(capsys)
    assert not (tmp_path / "out").exists()


FRACTIONS_ERROR = "--valid must be above 0 and --test 0 or above, with --valid + --test below 1"


@pytest.mark.parametrize(
    "options, message",
    [
        (["--valid", "0"], FRACTIONS_ERROR),
        (["--test", "-0.1"], FRACTIONS_ERROR),
        (["--valid", "0.5", "--test", "0.5"], FRACTIONS_ERROR),
        (["--valid", "nan"], FRACTIONS_ERROR),
        (["--seed", "-1"], "--seed must be between 0 and 2**32 - 1"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, capsys, options: list[str], message: str) -> None:
    write_onehot(tmp_path / "movies.csv", make_targets())
    assert main(["--csv", "movies.csv", "--ignore-columns", "Title", "Year", "--out", "out", *options]) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_missing_input_and_wrong_layout_are_refused(tmp_path: Path, capsys) -> None:
    assert main(["--csv", "nowhere.csv", "--out", "out"]) == 2
    assert "input table nowhere.csv does not exist" in error_line(capsys)

    write_genres(tmp_path / "genres.csv", make_targets())
    assert main(["--csv", "genres.csv", "--id-column", "imdb_id", "--out", "out"]) == 2
    assert "pass --label-column 'Genre'" in error_line(capsys)  # the hint names the option, not the config

    write_onehot(tmp_path / "movies.csv", make_targets())
    assert main(["--csv", "movies.csv", "--out", "out"]) == 2  # Title is not a class
    assert "column 'Title': labels must be 0 or 1" in (err := error_line(capsys))
    assert "--ignore-columns" in err
    assert not (tmp_path / "out").exists()


def test_a_moviegenre_table_gets_all_the_options_it_needs_in_the_first_message(
    tmp_path: Path, capsys
) -> None:
    rng = np.random.default_rng(0)
    genres = ["Drama", "Comedy", "Action", "Horror"]
    rows = [
        {
            "imdbId": str(100000 + i),
            "Title": f"Film {i} ({1990 + i % 30})",
            "Genre": "|".join(rng.choice(genres, size=int(rng.integers(1, 3)), replace=False)),
        }
        for i in range(60)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "MovieGenre.csv", index=False)
    assert main(["--csv", str(tmp_path / "MovieGenre.csv"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "try --id-column imdbId --label-column Genre" in err
    args = ["--csv", str(tmp_path / "MovieGenre.csv"), "--out", str(tmp_path / "out")]
    assert main([*args, "--id-column", "imdbId", "--label-column", "Genre"]) == 0
