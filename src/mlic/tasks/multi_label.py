"""`task="multi_label"` (the default): any number of classes per image; sigmoid; mAP, ROC-AUC, F1 at a
threshold, per-class thresholds tuned on valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: the process's matplotlib backend is left alone
from torch import nn

from mlic.metrics import classification as m
from mlic.tasks.base import Outputs, Task, last_split
from mlic.utils import io
from mlic.utils.markdown import rows_table


class MultiLabel(Task):
    name = "multi_label"
    columns = m.COLUMNS
    default_monitor = "valid/map"
    tunes_thresholds = True
    output = "per-class probabilities (sigmoid), N×C, in the order of classes"

    def default_loss(self) -> nn.Module:
        return nn.BCEWithLogitsLoss()

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def metrics(self, probs: np.ndarray, targets: np.ndarray, threshold: float) -> dict[str, float]:
        return m.multilabel_metrics(probs, targets, threshold)

    def prior_logits(self, targets: np.ndarray, pos_weight: np.ndarray | None) -> np.ndarray:
        return m.prior_logits(targets, pos_weight)

    def per_class_rows(self, classes, supports, outputs, threshold, thresholds):
        """Support per split, AP on valid and test, test F1 at the global and tuned thresholds."""
        rows: list[dict[str, Any]] = [{"class": c} for c in classes]
        for split, counts in supports.items():
            for row, n in zip(rows, counts):
                row[f"{split} support"] = int(n)
        last = last_split(outputs)
        for split, (probs, targets) in outputs.items():
            for row, stats in zip(rows, m.per_class(probs, targets, threshold)):
                row[f"{split} AP"] = stats["ap"]
                if split == last:
                    row[f"{last} F1 @{threshold:g}"] = stats["f1"]
        if last and thresholds is not None:
            probs, targets = outputs[last]
            for row, stats, t in zip(rows, m.per_class(probs, targets, thresholds), thresholds):
                row[f"{last} F1 tuned"] = stats["f1"]
                row["threshold"] = float(t)
        return rows

    def report_section(self, exp_dir, classes, rows, outputs) -> str:
        """The per-class table, with a bar plot of per-class AP (`per_class_ap.png`)."""
        split = plot_per_class_ap(rows, exp_dir / "per_class_ap.png", outputs)
        tuned = any("threshold" in r for r in rows)
        text = "\n## Per class\n\n" + (
            "`threshold` is each class's threshold tuned for F1 on valid (saved in `thresholds.json`); "
            "`F1 tuned` uses it. "
            if tuned
            else ""
        )
        text += f"AP is per class, support counts positives.\n\n{rows_table(rows, '.3f')}\n"
        if split:
            text += f"\n![per-class AP on {split}](per_class_ap.png)\n"
        return text

    def predictions(self, classes, probs, thresholds, top_k):
        """A probability column per class, then `predicted`: the classes at or above their threshold."""
        hits = probs >= thresholds[None, :]  # NaN (a failed image) is never a hit
        columns: dict[str, list] = {name: probs[:, j].tolist() for j, name in enumerate(classes)}
        columns["predicted"] = ["|".join(c for c, on in zip(classes, row) if on) for row in hits]
        return columns


def plot_per_class_ap(rows: list[dict[str, Any]], path: Path, outputs: Outputs | None = None) -> str | None:
    """Horizontal bars of per-class AP (test, else valid), each class named with its support, and a
    class's chance level (its share of the split's images: the AP of a model that ignores the image)
    marked; returns the split plotted."""
    split = next((s for s in ("test", "valid") if any(f"{s} AP" in r for r in rows)), None)
    if split is None:
        return None
    names = [f"{r['class']} ({r.get(f'{split} support', '?')})" for r in rows]
    values = [r.get(f"{split} AP", float("nan")) for r in rows]
    fig = Figure(figsize=(7, 0.3 * len(rows) + 1.4))
    ax = fig.subplots()
    ax.barh(range(len(rows)), values, color="tab:blue", label="AP")
    if outputs and split in outputs:
        chance = np.asarray(outputs[split][1]).mean(axis=0)
        ax.scatter(chance, range(len(rows)), marker="|", s=200, color="black", zorder=3)
    ax.set_yticks(range(len(rows)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(
        f"average precision ({split}); (n): the class's images; black tick: chance, the class's share of images"
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    io.write_with(path, lambda p: fig.savefig(p, format="png", dpi=100))
    return split
