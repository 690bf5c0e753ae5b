"""A table across experiments: `python -m mlic.compare experiments/*`.

One row per experiment folder (and one more for `model.swa.pth` and `model.ema.pth` where swa.py
evaluated them): model, image size, parameters, epochs, seconds per epoch, the best epoch, and the
valid and test metrics of the best model — each experiment's own task's (mAP, AUC, F1 for multi-label;
accuracy, top-5 accuracy, macro F1 for single-label; IoU and Dice for segmentation) — with the first
line of the config's docstring as the comment. Printed as Markdown and written as `compare.md` and
`compare.csv`.

The metrics come from the experiment's `results.json`; an experiment trained before mlic wrote that
file is read from its report.md's tables instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mlic.evaluate.compare_html import write_compare_html
from mlic.evaluate.html_report import config_docstring
from mlic.evaluate.report import rows_table
from mlic.experiment.checkpoints import read_metrics
from mlic.experiment.files import METRICS, MODEL_BEST, REPORT
from mlic.experiment.results import MODELS, read_results
from mlic.models.weights import read_state_dict
from mlic.tasks import ALL_COLUMNS, get_task
from mlic.utils import io
from mlic.utils.cli import run_cli
from mlic.utils.errors import CheckpointError, MlicError

LEADING = ("experiment", "model", "img_size", "params_M", "epochs", "s_per_epoch", "best")
SPLITS = ("valid", "test")
# the metric columns in one order that keeps each task's own (the loss is left out)
METRIC_COLUMNS = tuple(f"{split}/{m}" for split in SPLITS for m in ALL_COLUMNS if m != "loss")
COLUMNS = (*LEADING, *METRIC_COLUMNS, "comment")


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


def _parameters(state: dict[str, Any]) -> float:
    """Millions of weights (BatchNorm statistics are buffers, not counted)."""
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return sum(v.numel() for k, v in state.items() if not k.endswith(skip)) / 1e6


def _model_results(exp_dir: Path, best: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """model ("best", "swa", "ema") -> split -> metric -> value: results.json's, else report.md's tables
    (an experiment from before results.json), else the best epoch's own valid metrics (no report yet)."""
    data = read_results(exp_dir)
    if data is not None:
        return {name: data["models"][name] for name in MODELS if name in data["models"]}
    report = exp_dir / REPORT
    tables = report_tables(report.read_text(encoding="utf-8")) if report.is_file() else {}
    models = {"best": {s: tables[s] for s in SPLITS if s in tables}}
    for name in ("swa", "ema"):
        if f"{name}/valid" in tables:
            models[name] = {s: tables[f"{name}/{s}"] for s in SPLITS if f"{name}/{s}" in tables}
    if not models["best"]:
        models["best"] = {
            "valid": {k.split("/", 1)[1]: v for k, v in best.items() if str(k).startswith("valid/")}
        }
    return models


def epoch_rows(exp_dir: Path, notes: list[str] | None = None) -> pd.DataFrame | None:
    """The experiment's metrics.csv (empty when it has none); None, with a note, when it cannot be read."""
    path = exp_dir / METRICS
    if not path.is_file():
        return pd.DataFrame()
    try:
        return pd.DataFrame(read_metrics(path))
    except CheckpointError as e:
        if notes is not None:
            notes.append(f"note: {e} (the table leaves its epochs and seconds per epoch empty)")
        return None


def experiment_rows(exp_dir: Path, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """The experiment's row, and its swa and ema rows where swa.py evaluated them; the metric columns
    are its task's. What could not be read is said in `notes`."""
    state, meta = read_state_dict(exp_dir / MODEL_BEST, "model file")
    epochs = epoch_rows(exp_dir, notes)
    best = meta.get("metrics", {})
    img = meta.get("img_size")
    columns = [c for c in get_task(str(meta.get("task", "multi_label"))).columns if c != "loss"]
    base = {
        "experiment": exp_dir.name,
        "model": meta.get("model_name", ""),
        "img_size": f"{img[0]}x{img[1]}" if img else "",
        "params_M": round(_parameters(state), 2),
        "epochs": None if epochs is None else len(epochs),
        "s_per_epoch": round(float(epochs["time_s"].mean()), 1)
        if epochs is not None and "time_s" in epochs
        else None,
        "best": f"{best.get('stage')} {best.get('epoch')}" if best else "",
        "comment": (config_docstring(exp_dir).strip().splitlines() or [""])[0],
    }
    rows = []
    for name, splits in _model_results(exp_dir, best).items():
        row = dict(base, experiment=exp_dir.name + ("" if name == "best" else f" ({name})"))
        if name != "best":
            row["best"] = ""
        for split in SPLITS:
            values = splits.get(split) or {}
            row.update({f"{split}/{m}": values.get(m) for m in columns})
        rows.append(row)
    return rows


def compare(folders: Sequence[Path], sort: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The table over `folders` (those holding a model.best.pth), sorted by `sort` descending (default
    the first of valid/map, valid/accuracy and valid/iou that an experiment has), and a note for each
    folder passed over. Metric columns that no experiment has are left out."""
    rows, skipped = [], []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue  # a glob over experiments/ also lists compare.md and the like
        if not (folder / MODEL_BEST).is_file():
            skipped.append(f"skipped {folder}: no model.best.pth (not a trained experiment)")
            continue
        rows.extend(experiment_rows(folder, skipped))
    if not rows:
        raise MlicError(
            f"none of the {len(folders)} path(s) given is a trained experiment folder (one with "
            f"model.best.pth), e.g. `python -m mlic.compare experiments/*`"
        )
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    if sort is None:
        sort = next(
            (c for c in ("valid/map", "valid/accuracy", "valid/iou") if df[c].notna().any()), "valid/map"
        )
    if sort not in df.columns or (sort in METRIC_COLUMNS and df[sort].isna().all()):
        shown = [c for c in COLUMNS if c not in METRIC_COLUMNS or df[c].notna().any()]
        raise MlicError(
            f"--sort {sort!r} is not a column of these experiments; the columns are: {', '.join(shown)}"
        )
    df = df.sort_values(sort, ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    df = df.drop(columns=[c for c in METRIC_COLUMNS if c != sort and df[c].isna().all()])
    return df, skipped


def aligned(markdown_text: str) -> str:
    """A Markdown table with its columns padded to one width each, for a terminal: numbers to the right,
    text to the left (the separator row keeps its dashes)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown_text.splitlines()]
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(len(rows[0]))]

    def cell(text: str, width: int) -> str:
        if set(text) <= {"-", ":"} and text:
            return "-" * width
        return text.rjust(width) if text.replace(".", "", 1).lstrip("-").isdigit() else text.ljust(width)

    return "\n".join("| " + " | ".join(cell(c, w) for c, w in zip(r, widths)) + " |" for r in rows)


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
        help="column to sort by, descending (default valid/map; valid/accuracy for single-label and "
        "valid/iou for segmentation experiments)",
    )
    parser.add_argument(
        "--html", action="store_true", help="also write compare.html: each row linking to its report.html"
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
    print(aligned(text))
    print(f"\nwrote {out / 'compare.md'} and {out / 'compare.csv'}")
    if args.html:
        sort = args.sort or next(
            c for c in ("valid/map", "valid/accuracy", "valid/iou", "experiment") if c in df
        )
        print(f"wrote {write_compare_html(df, args.experiments, out, sort)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: _run(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
