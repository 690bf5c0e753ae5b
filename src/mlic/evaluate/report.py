"""`report.md` and its plots (what a person opens first in an experiment folder), and the metric tables
the CLIs print: one list of columns (`tasks.ALL_COLUMNS`) for all of them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure  # no pyplot: the process's matplotlib backend is left alone
from matplotlib.ticker import MaxNLocator

from mlic.config.schema import Config
from mlic.engine.lr_curve import DEFAULT_RULE, RULE_TEXT, RangeTest, sensible_range
from mlic.experiment.files import CURVES, REPORT
from mlic.metrics.classification import TUNED
from mlic.tasks import ALL_COLUMNS, get_task
from mlic.utils import io
from mlic.utils.environment import environment_markdown
from mlic.utils.markdown import rows_table


def _columns(results: dict[str, dict[str, float]]) -> list[str]:
    """The metric columns any split has (each task's, `mlic.tasks.base`), the tuned-threshold F1s last."""
    return [c for c in (*ALL_COLUMNS, *TUNED) if any(c in v for v in results.values())]


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A small fixed-width table of metrics, one row per split (what the CLIs print)."""
    columns = _columns(results)
    width = max([8, *(len(split) + 2 for split in results)])
    widths = [max(10, len(c) + 2) for c in columns]
    lines = [f"{'split':<{width}}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths))]
    for split, values in results.items():
        cells = "".join(f"{values.get(c, float('nan')):>{w}.4f}" for c, w in zip(columns, widths))
        lines.append(f"{split:<{width}}" + cells)
    return "\n".join(lines)


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Loss, validation metrics and the LR per epoch across all stages, each stage's start marked and
    named."""
    df = pd.DataFrame(rows)
    x = range(1, len(df) + 1)
    fig = Figure(figsize=(14, 4))
    ax_loss, ax_metric, ax_lr = fig.subplots(1, 3)
    for column, label in (("train/loss", "train loss"), ("valid/loss", "valid loss")):
        if column in df:
            ax_loss.plot(x, df[column], marker="o", label=label)
    for column in (f"valid/{c}" for c in ALL_COLUMNS if c != "loss"):
        if column in df:
            ax_metric.plot(x, df[column], marker="o", label=column.split("/")[1])
    for column, label in (("lr_head", "head"), ("lr_backbone", "backbone")):
        if column in df and df[column].notna().any():
            ax_lr.plot(x, df[column], marker="o", label=label)
    ax_lr.set_yscale("log")
    stages = df["stage"].tolist() if "stage" in df else []
    for ax in (ax_loss, ax_metric, ax_lr):
        for i, stage in enumerate(stages):
            if i == 0 or stage != stages[i - 1]:
                if i:
                    ax.axvline(i + 0.5, color="grey", linestyle="--", linewidth=1)
                ax.annotate(
                    stage,
                    (i + 1, 0.98),
                    xycoords=("data", "axes fraction"),
                    va="top",
                    fontsize=8,
                    color="grey",
                )
        ax.set_xlabel("epoch (all stages)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower left", fontsize=8)
    ax_loss.set_title("loss")
    ax_metric.set_title("validation metrics")
    ax_lr.set_title("learning rate (log scale)")
    fig.tight_layout()
    io.write_with(path, lambda p: fig.savefig(p, format="png", dpi=100))


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """Metrics as a Markdown table, one row per split (tuned-threshold F1s when present)."""
    columns = _columns(results)
    lines = ["| split | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for split, values in results.items():
        cells = " | ".join(f"{values.get(c, float('nan')):.4f}" for c in columns)
        lines.append(f"| {split} | {cells} |")
    return "\n".join(lines)


def epochs_table(rows: list[dict[str, Any]]) -> str:
    """metrics.csv as a Markdown table."""
    if not rows:
        return "(no epochs ran)"
    return rows_table(rows, ".4g")


def write_report(
    exp_dir: Path,
    config: Config,
    classes: list[str],
    rows: list[dict[str, Any]],
    best_row: dict[str, Any] | None,
    results: dict[str, dict[str, float]],
    train_time: float,
    task_section: str = "",
    notes: Sequence[str] = (),
    environment: dict[str, str] | None = None,
) -> None:
    """Write `report.md` (and `curves.png`) into the experiment folder; `task_section` is the task's
    per-class (and confusion) sections (`Task.report_section`)."""
    if rows:
        plot_curves(rows, exp_dir / CURVES)
    stages = ", ".join(
        f"{s.name} ({s.epochs} epoch{'s' if s.epochs != 1 else ''}"
        f"{', backbone frozen' if s.freeze_backbone else f', frozen {s.freeze!r}' if s.freeze else ''})"
        for s in config.resolved_stages()
    )
    best = f"stage `{best_row['stage']}`, epoch {best_row['epoch']}" if best_row else "none"
    tuned_note = (
        "\n`*_tuned`: F1 with per-class thresholds tuned on valid (`thresholds.json`), so valid's is optimistic.\n"
        if any(TUNED[0] in v for v in results.values())
        else ""
    )
    warnings_text = "".join(f"- warning: {n}\n" for n in notes)
    warnings_text = f"\n## Warnings\n\n{warnings_text}" if notes else ""
    environment_text = f"\n## Environment\n\n{environment_markdown(environment)}\n" if environment else ""
    threshold_line = (
        f"- threshold for F1: {config.threshold}\n" if get_task(config.task).tunes_thresholds else ""
    )
    text = f"""# {config.experiment_name}

- model: `{config.model.name}`, {len(classes)} classes: {", ".join(classes)}
- stages: {stages}
- best model (`{config.monitor}`): {best}; training took {train_time:.0f} s
{threshold_line}
## Best model

{markdown_table(results)}
{tuned_note}{task_section}

## Training curves

![training curves](curves.png)

## Epochs

{epochs_table(rows)}
{warnings_text}{environment_text}"""
    io.write_text(exp_dir / REPORT, text)


def save_lr_curve(
    result: RangeTest, csv_path: Path, png_path: Path, title: str = "", xlabel: str = "learning rate"
) -> None:
    """Write the curve as CSV (step, lr, loss, smoothed_loss) and a log-x plot with the suggestion and
    the sensible range (report.md's) shaded; `xlabel` names the LR swept."""
    io.write_with(csv_path, lambda p: result.to_frame().to_csv(p, index=False))
    fig = Figure(figsize=(7, 4))  # no pyplot: the process's matplotlib backend is left alone
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses, alpha=0.3, label="loss")
    ax.plot(result.lrs, result.smoothed, label="smoothed loss")
    if result.suggestion is not None:
        ax.axvline(
            result.suggestion, color="red", linestyle="--", label=f"suggestion {result.suggestion:.2e}"
        )
    span = sensible_range(result.lrs, result.smoothed)
    if span is not None:
        ax.axvspan(*span, color="tab:green", alpha=0.12, label=f"sensible range {span[0]:.1e}–{span[1]:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.95, min(max(finite), finite[0] * 2) * 1.05)
    ax.set_title(title or "LR range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    io.write_with(png_path, lambda p: fig.savefig(p, format="png", dpi=100))


def lr_table(results: dict[str, Any], suffixes: dict[str, str]) -> str:
    """One Markdown row per range test: steps, time, suggestion, sensible range and the curve."""
    lines = [
        "| stage | steps | seconds | rule | suggested LR | range | curve |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage, r in results.items():
        span = sensible_range(r.lrs, r.smoothed)
        span_text = f"{span[0]:.1e} – {span[1]:.1e}" if span else "—"
        lr = f"{r.suggestion:.2e}" if r.suggestion is not None else "none"
        early = " (diverged early)" if r.stopped_early else ""
        png = f"lr_finder{suffixes[stage]}.png"
        lines.append(
            f"| {stage} | {len(r.lrs)}{early} | {r.seconds:.1f} | {r.rule} | {lr} | {span_text} | [{png}]({png}) |"
        )
    return "\n".join(lines)


def write_lr_report(
    exp_dir: Path, config: Config, results: dict[str, Any], suffixes: dict[str, str], append: bool = False
) -> None:
    """`report.md` of a range test (or its section in a training report)."""
    section = f"""## LR range test

The suggestion is read off the smoothed loss (averaged over a window of LR centred on each point, so
it does not lag the sweep) by the rule named (`{DEFAULT_RULE}`, the default, is
{RULE_TEXT[DEFAULT_RULE]}) and is never above the LR of the lowest loss (but for `edge`, which reads past it); the range runs from a tenth of
the LR of the lowest loss up to it.

{lr_table(results, suffixes)}

""" + "".join(f"![{s}](lr_finder{suffixes[s]}.png)\n" for s in results)
    if append:
        text = (exp_dir / REPORT).read_text(encoding="utf-8") + "\n" + section
    else:
        text = f"# {config.experiment_name}: LR range test\n\n- model: `{config.model.name}`\n\n" + section
    io.write_text(exp_dir / REPORT, text)


SECTION = "## Checkpoint averaging (SWA)"


def replace_section(text: str, heading: str, section: str) -> str:
    """`text` with the Markdown section `heading` (up to the next `## `) replaced by `section`, or appended."""
    start = text.find(f"\n{heading}\n")
    if start < 0:
        return text.rstrip("\n") + "\n\n" + section
    end = text.find("\n## ", start + len(heading) + 2)
    rest = text[end:] if end >= 0 else ""
    return text[:start].rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n" + rest


def write_swa_report(
    exp_dir: Path,
    experiment_name: str,
    how: str,
    paths: Sequence[Path],
    bn_text: str,
    best: dict[str, Any],
    results: dict[str, dict[str, float]],
) -> None:
    """The SWA section of `report.md` (replaced when swa.py runs again): what was averaged and how it
    compares with `model.best.pth` (and `model.ema.pth`)."""
    section = f"""{SECTION}

- `model.swa.pth`: the average of {how}: {", ".join(f"`{p.name}`" for p in paths)}
- {bn_text}
- `best` is `model.best.pth` (stage `{best.get("stage")}`, epoch {best.get("epoch")})"""
    if any(k.startswith("ema/") for k in results):
        section += "\n- `ema` is `model.ema.pth`, the moving average of the weights kept during training"
    section += f"\n\n{markdown_table(results)}\n"
    report = exp_dir / REPORT
    text = report.read_text(encoding="utf-8") if report.is_file() else f"# {experiment_name}\n"
    io.write_text(report, replace_section(text, SECTION, section))
