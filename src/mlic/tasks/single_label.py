"""`task="single_label"`: exactly one class per image (a folder per class or a CSV); softmax; accuracy,
top-5 accuracy (more than five classes), macro F1, a confusion matrix."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score, precision_score, recall_score
from torch import nn

from mlic.metrics import classification as m
from mlic.metrics.classification import confusion, top_k_accuracy
from mlic.tasks.base import Task, last_split
from mlic.utils import io
from mlic.utils.markdown import rows_table


class SingleLabel(Task):
    name = "single_label"
    columns = ("loss", "accuracy", "top5_accuracy", "f1_macro")
    default_monitor = "valid/accuracy"
    softmax = True
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

    def per_class_rows(self, classes, supports, outputs, threshold, thresholds):
        """Images per split, then precision, recall and F1 of each class on test (else valid)."""
        rows: list[dict[str, Any]] = [{"class": c} for c in classes]
        for split, counts in supports.items():
            for row, n in zip(rows, counts):
                row[f"{split} images"] = int(n)
        last = last_split(outputs)
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
        last = last_split(outputs)
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
