"""`python -m mlic.compare --html`: compare.html, the compare table as a page (each experiment linking to
its report.html, columns sortable) with the valid metric of every experiment overlaid per epoch."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from mlic.evaluate.html_report import TEMPLATES, svg_of
from mlic.experiment.files import METRICS, REPORT_HTML
from mlic.utils import io


def _cells(df: pd.DataFrame, folders: dict[str, Path], out: Path) -> list[list[dict]]:
    rows = []
    for record in df.to_dict("records"):
        name = str(record["experiment"])
        folder = folders.get(name.split(" (")[0])
        page = folder / REPORT_HTML if folder is not None else None
        line = []
        for key, value in record.items():
            empty = value is None or (isinstance(value, float) and value != value)
            text = "" if empty else f"{value:.4f}" if isinstance(value, float) and "/" in key else str(value)
            line.append({"text": text, "sort": "" if empty else value})
        if page is not None and page.is_file():
            line[0]["link"] = Path(os.path.relpath(page.resolve(), out.resolve())).as_posix()
        rows.append(line)
    return rows


def _curves(folders: dict[str, Path], monitor: str) -> str | None:
    fig = Figure(figsize=(8, 3.2))
    ax = fig.subplots()
    drawn = False
    for name, folder in folders.items():
        path = folder / METRICS
        metrics = pd.read_csv(path) if path.is_file() else pd.DataFrame()
        if monitor in metrics and metrics[monitor].notna().any():
            ax.plot(range(1, len(metrics) + 1), metrics[monitor], marker="o", markersize=3, label=name)
            drawn = True
    if not drawn:
        return None
    ax.set_xlabel("epoch (all stages)")
    ax.set_ylabel(monitor)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return svg_of(fig)


def write_compare_html(df: pd.DataFrame, folders: list[Path], out: Path, sort: str) -> Path:
    """`out/compare.html` for the compare table `df` over `folders`."""
    by_name = {Path(f).name: Path(f) for f in folders if Path(f).is_dir()}
    monitor = sort if sort.startswith("valid/") else "valid/map"
    html = TEMPLATES.get_template("compare.html.j2").render(
        columns=list(df.columns),
        rows=_cells(df, by_name, out),
        sort=sort,
        monitor=monitor,
        curves=_curves(by_name, monitor),
    )
    path = out / "compare.html"
    io.write_text(path, html)
    return path
