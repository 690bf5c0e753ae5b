"""A table across experiments: `python -m mlic.compare experiments/*`.

One row per experiment folder (and one more for `model.swa.pth` and `model.ema.pth` where swa.py
evaluated them): model, image size, parameters, epochs, seconds per epoch, the best epoch, and the
valid and test mAP, AUC and F1 (micro) of the best model, with the first line of the config's
docstring as the comment. Printed as Markdown and written as `compare.md` and `compare.csv`.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mlic import io
from mlic.checkpoints import read_state_dict
from mlic.cli import run_cli
from mlic.errors import MlicError
from mlic.report import rows_table

# multi-label experiments fill the first three, single-label ones accuracy
METRICS = ("map", "auc", "f1_micro", "accuracy")
COLUMNS = (
    "experiment",
    "model",
    "img_size",
    "params_M",
    "epochs",
    "s_per_epoch",
    "best",
    *(f"{split}/{m}" for split in ("valid", "test") for m in METRICS),
    "comment",
)


def report_tables(text: str) -> dict[str, dict[str, float]]:
    """Every `| split | metric ... |` table of a report.md: row label -> metric -> value."""
    rows: dict[str, dict[str, float]] = {}
    header: list[str] | None = None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            header = None
        elif cells[0] == "split":
            header = cells
        elif header and not set(cells[0]) <= {"-"}:
            values = {}
            for name, cell in zip(header[1:], cells[1:]):
                try:
                    values[name] = float(cell)
                except ValueError:
                    pass
            rows[cells[0]] = values
    return rows


def _comment(exp_dir: Path) -> str:
    path = exp_dir / "config.py"
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _parameters(state: dict[str, Any]) -> float:
    """Millions of weights (BatchNorm statistics are buffers, not counted)."""
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return sum(v.numel() for k, v in state.items() if not k.endswith(skip)) / 1e6


def experiment_rows(exp_dir: Path) -> list[dict[str, Any]]:
    """The experiment's row, and its swa and ema rows when report.md has them."""
    best_path = exp_dir / "model.best.pth"
    state, meta = read_state_dict(best_path, "model file")
    metrics_csv = exp_dir / "metrics.csv"
    epochs = pd.read_csv(metrics_csv) if metrics_csv.is_file() else pd.DataFrame()
    report = exp_dir / "report.md"
    tables = report_tables(report.read_text(encoding="utf-8")) if report.is_file() else {}
    best = meta.get("metrics", {})
    img = meta.get("img_size")
    base = {
        "experiment": exp_dir.name,
        "model": meta.get("model_name", ""),
        "img_size": f"{img[0]}x{img[1]}" if img else "",
        "params_M": round(_parameters(state), 2),
        "epochs": len(epochs),
        "s_per_epoch": round(float(epochs["time_s"].mean()), 1) if "time_s" in epochs else None,
        "best": f"{best.get('stage')} {best.get('epoch')}" if best else "",
        "comment": _comment(exp_dir),
    }
    rows = []
    for kind, valid, test in (
        ("", "valid", "test"),
        (" (swa)", "swa/valid", "swa/test"),
        (" (ema)", "ema/valid", "ema/test"),
    ):
        if kind and valid not in tables:
            continue
        row = dict(base, experiment=exp_dir.name + kind)
        if kind:
            row["best"] = ""
        for split, label in (("valid", valid), ("test", test)):
            values = tables.get(label, {})
            if split == "valid" and not values and not kind:  # no report yet: the best epoch's own row
                values = {k.split("/", 1)[1]: v for k, v in best.items() if str(k).startswith("valid/")}
            for m in METRICS:
                row[f"{split}/{m}"] = values.get(m)
        rows.append(row)
    return rows


def compare(folders: Sequence[Path], sort: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The table over `folders` (those holding a model.best.pth), sorted by `sort` descending (default
    valid/map, or valid/accuracy when no experiment has a mAP: single-label ones), and a note for each
    folder passed over. Metric columns that no experiment has are left out."""
    rows, skipped = [], []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue  # a glob over experiments/ also lists compare.md and the like
        if not (folder / "model.best.pth").is_file():
            skipped.append(f"skipped {folder}: no model.best.pth (not a trained experiment)")
            continue
        rows.extend(experiment_rows(folder))
    if not rows:
        raise MlicError(
            f"none of the {len(folders)} path(s) given is a trained experiment folder (one with "
            f"model.best.pth), e.g. `python -m mlic.compare experiments/*`"
        )
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    if sort is None:
        sort = "valid/map" if df["valid/map"].notna().any() else "valid/accuracy"
    if sort not in df.columns:
        raise MlicError(f"--sort {sort!r} is not a column; the columns are: {', '.join(COLUMNS)}")
    df = df.sort_values(sort, ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    metrics = [f"{split}/{m}" for split in ("valid", "test") for m in METRICS]
    df = df.drop(columns=[c for c in metrics if c != sort and df[c].isna().all()])
    return df, skipped


def markdown(df: pd.DataFrame) -> str:
    """The table as Markdown: metrics with 4 decimals, an empty cell where there is no value."""
    plain = {"params_M": "{:.2f}", "s_per_epoch": "{:.1f}", "epochs": "{:.0f}"}
    records = []
    for r in df.to_dict("records"):
        row = {}
        for k, v in r.items():
            if v is None or (isinstance(v, float) and v != v):
                row[k] = ""
            elif k in plain:
                row[k] = plain[k].format(v)
            else:
                row[k] = v
        records.append(row)
    return rows_table(records, ".4f")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mlic.compare", description="One row per experiment: model, size, time, metrics."
    )
    parser.add_argument("experiments", nargs="+", type=Path, help="experiment folders, e.g. experiments/*")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where compare.md and compare.csv go (default: the first folder's parent)",
    )
    parser.add_argument(
        "--sort",
        default=None,
        help="column to sort by, descending (default valid/map; valid/accuracy for single-label experiments)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


def _run(args: argparse.Namespace) -> int:
    df, skipped = compare(args.experiments, args.sort)
    for note in skipped:
        print(note, file=sys.stderr)
    out = args.out or Path(args.experiments[0]).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(df)
    io.write_text(out / "compare.md", text + "\n")
    io.write_with(out / "compare.csv", lambda p: df.to_csv(p, index=False))
    print(text)
    print(f"\nwrote {out / 'compare.md'} and {out / 'compare.csv'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: _run(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
