"""`report.html`: one self-contained page per experiment (inline CSS, JavaScript, SVG plots and JPEG
thumbnails; no CDN, no server) that shows what the model gets wrong.

- the run: the config's docstring, the stages, the environment;
- the curves per epoch across stages (loss, the monitor, the LR) and the range tests;
- the best (and SWA/EMA) models' metrics, and per class: support, AP or precision/recall/F1 or IoU/Dice,
  the tuned threshold;
- an error browser on test (else valid): per class, the images the model calls that class that are not
  (false positives, most confident first) and the ones of that class it misses (false negatives); for a
  single-label task the confusion matrix, each cell linking to its images; for segmentation the images
  with the lowest IoU, their true masks overlaid;
- the warnings the run logged.

Tables sort by a click on a column; a class filter hides the other classes. Thumbnails are at most
`THUMB` pixels on their long side, JPEG, `PER_LIST` per list, so the page's size depends on the number
of classes, not on the split's (docs/experiment-folder.md).
"""

from __future__ import annotations

import ast
import base64
import io as bytes_io
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from mlic.engine.lr_curve import suggest
from mlic.experiment.files import CONFIG_COPY, LABEL_AUDIT, METRICS, RELIABILITY, REPORT_HTML
from mlic.experiment.results import read_results
from mlic.tasks import get_task
from mlic.utils import io

THUMB = 96  # pixels, the long side of a thumbnail
PER_LIST = 8  # images per list of the error browser (and per cell of a confusion matrix)
TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("mlic.evaluate", "templates"), autoescape=jinja2.select_autoescape()
)


def thumbnail(path: str | Path, mask: np.ndarray | None = None) -> str:
    """The image at `path` as a small JPEG data URI; with `mask` (H×W booleans at the image's size) the
    masked pixels tinted red."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    if mask is not None and mask.shape == rgb.shape[:2]:
        rgb[mask] = 0.5 * rgb[mask] + 0.5 * np.array([255.0, 0.0, 0.0])
    small = Image.fromarray(rgb.astype(np.uint8))
    small.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    buffer = bytes_io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def svg_of(fig: Figure) -> str:
    buffer = bytes_io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def curves_svg(rows: pd.DataFrame, monitor: str) -> str | None:
    """Loss, the monitor and the head's LR per epoch, the stages' boundaries marked and named."""
    if rows.empty:
        return None
    fig = Figure(figsize=(9, 2.8))
    axes = fig.subplots(1, 3)
    x = np.arange(1, len(rows) + 1)
    panels = [
        (["train/loss", "valid/loss"], "loss"),
        ([monitor], monitor),
        (["lr_head"], "learning rate (head)"),
    ]
    for ax, (columns, title) in zip(axes, panels):
        for column in columns:
            if column in rows and rows[column].notna().any():
                ax.plot(x, rows[column], marker="o", markersize=3, label=column)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch (all stages)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if title.startswith("learning"):
            ax.set_yscale("log")
        for start, stage in _stage_starts(rows):
            ax.axvline(start - 0.5, color="grey", lw=0.8, ls="--")
            ax.annotate(stage, (start - 0.4, 1), xycoords=("data", "axes fraction"), fontsize=7, va="top")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return svg_of(fig)


def _stage_starts(rows: pd.DataFrame) -> list[tuple[int, str]]:
    stages = rows["stage"].astype(str).tolist() if "stage" in rows else []
    return [(i + 1, s) for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]]


def range_test_svgs(exp_dir: Path) -> list[dict[str, str]]:
    """Each range test's curve (raw and smoothed loss against LR) with the LR its rule suggests."""
    out = []
    for path in sorted(exp_dir.glob("lr_finder*.csv")):
        curve = pd.read_csv(path)
        if not {"lr", "loss", "smoothed_loss"} <= set(curve.columns) or curve.empty:
            continue
        fig = Figure(figsize=(4.5, 2.8))
        ax = fig.subplots()
        ax.plot(curve["lr"], curve["loss"], color="lightgrey", lw=0.8, label="loss")
        ax.plot(curve["lr"], curve["smoothed_loss"], color="tab:blue", label="smoothed")
        lr = suggest(curve["lr"].tolist(), curve["smoothed_loss"].tolist())
        if lr is not None:
            ax.axvline(lr, color="tab:red", ls="--", label=f"suggested {lr:.2e}")
        low, high = np.nanpercentile(curve["smoothed_loss"], [0, 90])
        ax.set_ylim(low - 0.05 * (high - low), high + 0.3 * (high - low))  # not the divergence spike
        ax.set_xscale("log")
        ax.set_xlabel("learning rate", fontsize=8)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out.append(
            {"name": path.stem.removeprefix("lr_finder").lstrip("_") or "the stage", "svg": svg_of(fig)}
        )
    return out


def config_docstring(exp_dir: Path) -> str:
    """The docstring of the experiment's config.py copy ('' without one)."""
    try:
        return ast.get_docstring(ast.parse((exp_dir / CONFIG_COPY).read_text(encoding="utf-8"))) or ""
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ""


def _per_class(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """report.md's per-class rows as a table: columns, and cells with a sort value and a text."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = []
    for r in rows:
        line = []
        for c in columns:
            v = r.get(c)
            if isinstance(v, float):
                line.append({"sort": "" if v != v else v, "text": "" if v != v else f"{v:.3f}"})
            else:
                line.append({"sort": "" if v is None else v, "text": "" if v is None else str(v)})
        cells.append({"cls": str(r.get("class", "")), "cells": line})
    return {"columns": columns, "rows": cells}


def _png(path: Path) -> str | None:
    """A PNG of the folder as a data URI (the page stays one file), None when there is none."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode() if path.is_file() else None


def _results(exp_dir: Path) -> list[dict[str, Any]]:
    data = read_results(exp_dir) or {"task": "multi_label", "models": {}}
    columns = [c for c in get_task(data["task"]).columns]
    out = []
    for model, splits in data["models"].items():
        for split, values in splits.items():
            out.append({"model": model, "split": split, "cells": [values.get(c) for c in columns]})
    return [{"columns": columns, "rows": out}] if out else []


def audit_section(exp_dir: Path, per_split: int = 3 * PER_LIST) -> list[dict[str, Any]]:
    """The label audit's likeliest wrong rows per split (`label_audit.csv`, `python -m mlic.audit`), each
    with a thumbnail and its likeliest wrong label; [] without an audit."""
    path = exp_dir / LABEL_AUDIT
    try:
        table = pd.read_csv(path, dtype={"id": str, "class": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return []
    needed = {"split", "id", "class", "given_label", "probability", "score", "flagged", "image"}
    if not needed <= set(table.columns):
        return []
    out = []
    for split, rows in table.groupby("split", sort=False):
        first = rows.drop_duplicates(["id"]).head(per_split)  # the file lists a row's worst label first
        items = []
        for r in first.to_dict("records"):
            try:
                src = thumbnail(r["image"])
            except OSError:  # moved or deleted since the audit: listed without a picture
                src = ""
            items.append(
                {
                    "id": r["id"],
                    "cls": r["class"],
                    "given": int(r["given_label"]),
                    "prob": float(r["probability"]),
                    "score": float(r["score"]),
                    "flagged": bool(r["flagged"]),
                    "src": src,
                }
            )
        out.append(
            {
                "name": split,
                "count": len(rows),
                "rows": rows["id"].nunique(),
                "flagged": int(rows["flagged"].astype(bool).sum()),
                "images": items,
            }
        )
    return out


def write_html_report(
    exp_dir: Path,
    task: str,
    classes: list[str],
    class_rows: list[dict[str, Any]],
    errors: dict[str, Any],
    monitor: str,
    notes: list[str] | tuple[str, ...] = (),
    environment: dict[str, str] | None = None,
) -> Path:
    """Write `report.html` from the experiment folder's files and what the caller evaluated: `class_rows`
    (report.md's per-class table) and `errors` (`split`, and `classes`, `confusion` or `worst`, from
    `mlic.evaluate.errors`)."""
    exp_dir = Path(exp_dir)
    metrics = pd.read_csv(exp_dir / METRICS) if (exp_dir / METRICS).is_file() else pd.DataFrame()
    html = TEMPLATES.get_template("report.html.j2").render(
        name=exp_dir.name,
        task=task,
        classes=classes,
        docstring=config_docstring(exp_dir),
        stages=_stage_starts(metrics),
        epochs=len(metrics),
        curves=curves_svg(metrics, monitor),
        range_tests=range_test_svgs(exp_dir),
        results=_results(exp_dir),
        reliability=_png(exp_dir / RELIABILITY),
        per_class=_per_class(class_rows),
        errors=errors,
        audit=audit_section(exp_dir),
        notes=list(notes),
        environment=environment or {},
    )
    path = exp_dir / REPORT_HTML
    io.write_text(path, html)
    return path
