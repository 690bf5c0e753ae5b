"""What differs by task, in one place per task: how labels are read, the default loss and monitor, the
activation that turns logits into probabilities, the metrics, the prior head, the per-class section
of report.md and the predictions table. Everything else (config, stages, range test, SWA, EMA,
resume, `--test`, export, predict) is shared and asks the config's task.

- `MultiLabel` (`task="multi_label"`, the default): any number of classes per image; sigmoid; mAP,
  ROC-AUC, F1 at a threshold, per-class thresholds tuned on valid.
- `SingleLabel` (`task="single_label"`): exactly one class per image, from a folder per class or a
  CSV; softmax; accuracy, top-5 accuracy (more than five classes), macro F1, a confusion matrix.
- `Segmentation` (`task="segmentation"`, `task="multilabel_segmentation"`): a class per pixel (softmax)
  or a mask per class (sigmoids), segmentation-models-pytorch models; IoU and Dice. Its targets are
  C×H×W one-hot masks in the batches, and each image's pixel share per class in the label table.

Targets are a one-hot float matrix (rows × classes) for both, so samplers, the cache, `data_fraction`,
mixing (the loss mixed with λ) and every loss that takes probability targets
(`torch.nn.CrossEntropyLoss` with `label_smoothing` among them) work unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure  # no pyplot: the process's matplotlib backend is left alone
from sklearn.metrics import f1_score, precision_score, recall_score
from torch import nn

from mlic import io
from mlic import metrics as m
from mlic.errors import ConfigError, DataError
from mlic.labels import (
    class_names,
    csv_labels,
    folder_labels,
    genre_targets,
    one_class_per_row,
    onehot_targets,
)
from mlic.markdown import rows_table

if TYPE_CHECKING:
    from mlic.config import Data

Outputs = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (probabilities, targets)


class Task:
    """The interface every task implements (see the module's docstring)."""

    name: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]  # metric columns of a split, `loss` first, in table order
    default_monitor: ClassVar[str]
    tunes_thresholds: ClassVar[bool] = False  # per-class thresholds tuned on valid (`thresholds.json`)
    output: ClassVar[str]  # what the exported model returns, in words (export.json)
    family: ClassVar[str] = "timm"  # which library builds its models: "timm", or "smp" for segmentation
    pixelwise: ClassVar[bool] = False  # targets are masks (segmentation): read with the images, no cache
    recomputes_loss: ClassVar[bool] = True  # the loss can be recomputed from the gathered `eval_rows`

    def default_loss(self) -> nn.Module:
        raise NotImplementedError

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities from a batch of logits (N × C)."""
        raise NotImplementedError

    def metrics(self, probs: np.ndarray, targets: np.ndarray, threshold: float) -> dict[str, float]:
        """The metrics of a whole split (its `eval_rows` and their targets), keyed by `columns` (without `loss`)."""
        raise NotImplementedError

    def eval_rows(
        self, logits: torch.Tensor, targets: torch.Tensor, threshold: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What an evaluation keeps of one batch until the split ends, a row per image: (the logits, the
        targets) for classification; a segmentation task keeps per-image counts instead of its masks."""
        return logits, targets

    def split_outputs(self, rows: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """A whole split's `eval_rows` as what `metrics`, the report and thresholds read: probabilities."""
        return self.activate(rows.float()).cpu().numpy(), targets.float().cpu().numpy()

    def loss_probe(self, targets: np.ndarray) -> torch.Tensor:
        """A batch of targets shaped as the loss gets them, from rows of a label table's `targets`."""
        return torch.from_numpy(np.array(targets, dtype=np.float32))

    def per_image(self, probs: np.ndarray) -> np.ndarray:
        """One row per image (N × C) of a batch of `activate`d outputs, for the predictions table."""
        return probs

    def prior_logits(self, targets: np.ndarray, pos_weight: np.ndarray | None) -> np.ndarray:
        """The constant logits that fit the train labels best: the new head's starting bias."""
        raise NotImplementedError

    def read_labels(self, path: Path, cfg: Data, classes: list[str] | None) -> tuple:
        """(ids, image paths, one-hot targets, classes) of one split's label file or folder."""
        raise NotImplementedError

    def per_class_rows(
        self,
        classes: list[str],
        supports: dict[str, np.ndarray],
        outputs: Outputs,
        threshold: float,
        thresholds: np.ndarray | None,
    ) -> list[dict[str, Any]]:
        """One row per class for report.md (`supports`: split -> images per class)."""
        raise NotImplementedError

    def report_section(
        self, exp_dir: Path, classes: list[str], rows: list[dict[str, Any]], outputs: Outputs
    ) -> str:
        """The task's sections of report.md after the best model's metrics (writes their plots)."""
        raise NotImplementedError

    def predictions(
        self, classes: list[str], probs: np.ndarray, thresholds: np.ndarray, top_k: int | None
    ) -> dict[str, list]:
        """The predictions table's columns after `image` (NaN rows: images that failed)."""
        raise NotImplementedError


def _last_split(outputs: Outputs) -> str | None:
    return "test" if "test" in outputs else "valid" if "valid" in outputs else None


# ---------------------------------------------------------------------------------------- multi-label


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

    def read_labels(self, path: Path, cfg: Data, classes: list[str] | None) -> tuple:
        if path.is_dir():
            raise DataError(
                f"label table {path} is a folder: a folder per class gives one label per image, so set "
                f"task='single_label', or point the split at a label CSV"
            )
        targets_of = genre_targets if cfg.label_column is not None else onehot_targets
        return csv_labels(path, cfg, classes, targets_of)

    def per_class_rows(self, classes, supports, outputs, threshold, thresholds):
        """Support per split, AP on valid and test, test F1 at the global and tuned thresholds."""
        rows: list[dict[str, Any]] = [{"class": c} for c in classes]
        for split, counts in supports.items():
            for row, n in zip(rows, counts):
                row[f"{split} support"] = int(n)
        last = _last_split(outputs)
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
        split = _plot_per_class_ap(rows, exp_dir / "per_class_ap.png")
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


def _plot_per_class_ap(rows: list[dict[str, Any]], path: Path) -> str | None:
    """Horizontal bars of per-class AP (test, else valid); returns the split plotted."""
    split = next((s for s in ("test", "valid") if any(f"{s} AP" in r for r in rows)), None)
    if split is None:
        return None
    names = [r["class"] for r in rows]
    values = [r.get(f"{split} AP", float("nan")) for r in rows]
    fig = Figure(figsize=(7, 0.3 * len(rows) + 1.2))
    ax = fig.subplots()
    ax.barh(range(len(rows)), values, color="tab:blue")
    ax.set_yticks(range(len(rows)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"average precision ({split})")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    io.write_with(path, lambda p: fig.savefig(p, format="png", dpi=100))
    return split


# --------------------------------------------------------------------------------------- single-label


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the `k` highest probabilities."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def confusion(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class), rows true."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


class SingleLabel(Task):
    name = "single_label"
    columns = ("loss", "accuracy", "top5_accuracy", "f1_macro")
    default_monitor = "valid/accuracy"
    output = "class probabilities (softmax, each row sums to 1), N×C, in the order of classes"

    def default_loss(self) -> nn.Module:
        return nn.CrossEntropyLoss()

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1)

    def metrics(self, probs: np.ndarray, targets: np.ndarray, threshold: float) -> dict[str, float]:
        """Accuracy, top-5 accuracy (with more than five classes) and macro F1 over every class."""
        probs = np.asarray(probs, dtype=np.float64)
        labels = np.asarray(targets).argmax(axis=1)
        predicted = probs.argmax(axis=1)
        out = {"accuracy": float((predicted == labels).mean())}
        if probs.shape[1] > 5:
            out["top5_accuracy"] = top_k_accuracy(probs, labels, 5)
        out["f1_macro"] = float(
            f1_score(labels, predicted, labels=range(probs.shape[1]), average="macro", zero_division=0)
        )
        return out

    def prior_logits(self, targets: np.ndarray, pos_weight: np.ndarray | None) -> np.ndarray:
        """log p(class): softmax of these gives each class's train frequency."""
        p = m.class_priors(targets)
        return np.log(p / p.sum())

    def read_labels(self, path: Path, cfg: Data, classes: list[str] | None) -> tuple:
        if path.is_dir():
            return folder_labels(path, classes)
        if cfg.label_column is not None:
            return csv_labels(path, cfg, classes, class_names)
        ids, paths, targets, classes = csv_labels(path, cfg, classes, onehot_targets)
        one_class_per_row(targets, path)
        return ids, paths, targets, classes

    def per_class_rows(self, classes, supports, outputs, threshold, thresholds):
        """Images per split, then precision, recall and F1 of each class on test (else valid)."""
        rows: list[dict[str, Any]] = [{"class": c} for c in classes]
        for split, counts in supports.items():
            for row, n in zip(rows, counts):
                row[f"{split} images"] = int(n)
        last = _last_split(outputs)
        if last:
            probs, targets = outputs[last]
            labels, predicted = targets.argmax(1), probs.argmax(1)
            every = list(range(len(classes)))
            for name, score in (("precision", precision_score), ("recall", recall_score), ("F1", f1_score)):
                values = score(labels, predicted, labels=every, average=None, zero_division=0)
                for row, v in zip(rows, values):
                    row[f"{last} {name}"] = float(v)
        return rows

    def report_section(self, exp_dir, classes, rows, outputs) -> str:
        """The per-class table and the confusion matrix (also `confusion.csv`) of test, else valid."""
        text = f"\n## Per class\n\n{rows_table(rows, '.3f')}\n"
        last = _last_split(outputs)
        if last is None:
            return text
        probs, targets = outputs[last]
        matrix = confusion(targets.argmax(1), probs.argmax(1), len(classes))
        frame = pd.DataFrame(matrix, index=classes, columns=classes)
        frame.index.name = "true \\ predicted"
        io.write_with(exp_dir / "confusion.csv", lambda p: frame.to_csv(p))
        table = [
            {"true \\ predicted": c, **dict(zip(classes, map(int, row)))} for c, row in zip(classes, matrix)
        ]
        return text + (
            f"\n## Confusion matrix ({last})\n\nRows are the true class, columns the predicted one "
            f"(the highest probability); also in `confusion.csv`.\n\n{rows_table(table, 'd')}\n"
        )

    def predictions(self, classes, probs, thresholds, top_k):
        """`predicted` (the most probable class), then the `top_k` classes and their probabilities."""
        k = min(top_k or 5, len(classes))
        failed = np.isnan(probs).any(axis=1)
        order = np.argsort(-np.nan_to_num(probs, nan=-1.0), axis=1, kind="stable")[:, :k]
        columns: dict[str, list] = {
            "predicted": ["" if bad else classes[row[0]] for bad, row in zip(failed, order)]
        }
        for i in range(k):
            columns[f"top{i + 1}"] = ["" if bad else classes[row[i]] for bad, row in zip(failed, order)]
            columns[f"top{i + 1}_prob"] = [
                float("nan") if bad else float(p[row[i]]) for bad, p, row in zip(failed, probs, order)
            ]
        return columns


# --------------------------------------------------------------------------------------- segmentation


class Segmentation(Task):
    """Semantic segmentation: a class per pixel (softmax), or with `multilabel` a mask per class that may
    overlap (a sigmoid per class, `threshold`). Models are segmentation-models-pytorch architectures;
    masks are read by `mlic.segmentation`. An evaluation keeps, per image, the true-positive, false-positive
    and false-negative pixels of each class (`segmentation.confusion_counts`), so a split's IoU and Dice
    are exact over all its pixels whatever the batch size or the number of processes."""

    family = "smp"
    pixelwise = True
    recomputes_loss = False
    columns = ("loss", "iou", "dice")
    default_monitor = "valid/iou"

    def __init__(self, multilabel: bool) -> None:
        self.multilabel = multilabel
        self.name = "multilabel_segmentation" if multilabel else "segmentation"
        self.output = (
            "per-pixel class probabilities (a sigmoid per class), N×C×H×W at the input size"
            if multilabel
            else "per-pixel class probabilities (softmax over the classes, summing to 1), N×C×H×W at the input size"
        )

    def default_loss(self) -> nn.Module:
        from mlic.segmentation import DiceLoss, SumLoss

        if self.multilabel:
            return SumLoss(DiceLoss("multilabel"), nn.BCEWithLogitsLoss())
        return SumLoss(DiceLoss("multiclass"), nn.CrossEntropyLoss())

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

    def eval_rows(self, logits, targets, threshold):
        from mlic.segmentation import confusion_counts

        counts = confusion_counts(logits, targets, self.multilabel, threshold)
        share = targets.float().mean(dim=tuple(range(2, targets.dim())))  # each class's share of the pixels
        return counts, share

    def split_outputs(self, rows, targets):
        return rows.double().cpu().numpy(), targets.float().cpu().numpy()

    def metrics(self, probs, targets, threshold):
        """Mean IoU and Dice over the classes (a class absent from the split and never predicted is left
        out), each from its pixels over the whole split."""
        from mlic.segmentation import iou_dice, nanmean

        iou, dice = iou_dice(probs)
        return {"iou": nanmean(iou), "dice": nanmean(dice)}

    def prior_logits(self, targets, pos_weight):
        """Each class's share of the train pixels: log p for softmax, its log-odds for sigmoids."""
        if self.multilabel:
            return m.prior_logits(targets, pos_weight)
        p = m.class_priors(targets)
        return np.log(p / p.sum())

    def loss_probe(self, targets):
        rows = torch.from_numpy(np.array(targets, dtype=np.float32))
        return rows[:, :, None, None].expand(-1, -1, 8, 8).contiguous()

    def per_image(self, probs):
        """Each class's share of the image's pixels in the prediction (most probable class, or at least 0.5)."""
        if self.multilabel:
            hits = probs >= 0.5
        else:
            hits = probs.argmax(1)[:, None] == np.arange(probs.shape[1])[None, :, None, None]
        return hits.reshape(len(probs), probs.shape[1], -1).mean(-1)

    def read_labels(self, path: Path, cfg: Data, classes: list[str] | None) -> tuple:
        from mlic.segmentation import segmentation_labels

        return segmentation_labels(path, cfg, classes, self.multilabel)

    def per_class_rows(self, classes, supports, outputs, threshold, thresholds):
        """Each class's share of the pixels, then its IoU and Dice, per evaluated split."""
        from mlic.segmentation import iou_dice

        rows: list[dict[str, Any]] = [{"class": c} for c in classes]
        for split, (counts, shares) in outputs.items():
            iou, dice = iou_dice(counts)
            for j, row in enumerate(rows):
                row[f"{split} pixels %"] = 100.0 * float(shares[:, j].mean())
                row[f"{split} IoU"] = float(iou[j])
                row[f"{split} Dice"] = float(dice[j])
        return rows

    def report_section(self, exp_dir, classes, rows, outputs) -> str:
        return (
            "\n## Per class\n\n`pixels %` is the class's share of the split's pixels in the true masks; IoU "
            "and Dice count every pixel of the split (empty: the class is neither present nor predicted)."
            f"\n\n{rows_table(rows, '.3f')}\n"
        )

    def predictions(self, classes, probs, thresholds, top_k):
        """Each class's share of the image's predicted pixels, then `predicted`: the classes that cover
        any pixel, `|`-separated (the masks themselves: `predict.py --masks DIR`)."""
        columns: dict[str, list] = {name: probs[:, j].tolist() for j, name in enumerate(classes)}
        columns["predicted"] = ["|".join(c for c, share in zip(classes, row) if share > 0) for row in probs]
        return columns


# ------------------------------------------------------------------------------------------ registry

TASKS: dict[str, Task] = {
    t.name: t for t in (MultiLabel(), SingleLabel(), Segmentation(False), Segmentation(True))
}
# every task's metric columns in one order that keeps each task's own: the tables show those a result has
ALL_COLUMNS = ("loss", "map", "auc", "f1_micro", "accuracy", "top5_accuracy", "f1_macro", "iou", "dice")


def get_task(name: str) -> Task:
    """The task named `name`, or one ConfigError sentence listing the tasks."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise ConfigError(f"field 'task' must be one of {', '.join(map(repr, TASKS))}, got {name!r}")
    return TASKS[name]
