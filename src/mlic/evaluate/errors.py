"""What the model gets wrong on one evaluated split, for report.html's error browser: per class its most
confident false positives and its most missed positives (multi-label, single-label), the confusion
matrix with each cell's images (single-label), the images with the lowest IoU (segmentation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mlic.data.tables import LabelTable
from mlic.metrics.segmentation import iou_dice, nanmean

Thumb = Callable[..., str]  # (path, mask=None) -> data URI


def _item(
    table: LabelTable, classes: list[str], targets: np.ndarray, i: int, prob: float, thumb: Thumb
) -> dict:
    return {
        "id": str(table.ids[i]),
        "src": thumb(table.paths[i]),
        "prob": float(prob),
        "labels": ", ".join(c for c, t in zip(classes, targets[i]) if t > 0.5) or "none",
    }


def class_errors(
    table: LabelTable,
    classes: list[str],
    probs: np.ndarray,
    targets: np.ndarray,
    called: np.ndarray,
    per_list: int,
    thumb: Thumb,
) -> list[dict[str, Any]]:
    """Per class: `fp`, the images the model calls that class (`called`: at or above its threshold, or
    its most probable class) that do not have it, most confident first; `fn`, the images with it that
    the model does not call it, least confident first."""
    out = []
    for j, name in enumerate(classes):
        fp = np.flatnonzero(called[:, j] & (targets[:, j] < 0.5))
        fn = np.flatnonzero(~called[:, j] & (targets[:, j] >= 0.5))
        out.append(
            {
                "name": name,
                "fp_count": len(fp),
                "fn_count": len(fn),
                "fp": [
                    _item(table, classes, targets, i, probs[i, j], thumb)
                    for i in _top(fp, -probs[fp, j], per_list)
                ],
                "fn": [
                    _item(table, classes, targets, i, probs[i, j], thumb)
                    for i in _top(fn, probs[fn, j], per_list)
                ],
            }
        )
    return out


def _top(rows: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    return rows[np.argsort(keys, kind="stable")][:n]


def confusion_cells(
    table: LabelTable, classes: list[str], probs: np.ndarray, targets: np.ndarray, per_list: int, thumb: Thumb
) -> dict[str, Any]:
    """The confusion matrix (rows true, columns predicted) and, per off-diagonal cell, its images."""
    true, predicted = targets.argmax(1), probs.argmax(1)
    k = len(classes)
    matrix = np.zeros((k, k), dtype=int)
    np.add.at(matrix, (true, predicted), 1)
    cells = []
    for a in range(k):
        for b in range(k):
            rows = np.flatnonzero((true == a) & (predicted == b))
            if a == b or not len(rows):
                continue
            rows = rows[np.argsort(-probs[rows, b], kind="stable")][:per_list]
            items = [_item(table, classes, targets, i, probs[i, b], thumb) for i in rows]
            cells.append(
                {"true": classes[a], "predicted": classes[b], "count": int(matrix[a, b]), "images": items}
            )
    return {"classes": classes, "matrix": matrix.tolist(), "cells": cells}


def worst_segmentations(
    table: LabelTable,
    classes: list[str],
    counts: np.ndarray,
    per_list: int,
    thumb: Thumb,
    predict: Callable[[str], np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """The images with the lowest mean IoU over their classes, their true masks' foreground tinted, and
    with `predict` (path -> the predicted foreground at the image's size) their predicted masks'."""
    scores = np.array([nanmean(iou_dice(counts[i : i + 1])[0]) for i in range(len(counts))])
    order = np.argsort(np.nan_to_num(scores, nan=2.0), kind="stable")[:per_list]
    out = []
    for i in order:
        mask = table.masks[i] if table.masks is not None else None
        foreground = None if mask is None else (mask.any(-1) if mask.ndim == 3 else mask > 0)
        item = {"id": str(table.ids[i]), "src": thumb(table.paths[i], foreground), "iou": float(scores[i])}
        if predict is not None:
            item["predicted"] = thumb(table.paths[i], predict(str(table.paths[i])))
        out.append(item)
    return out


def page_errors(
    task: str,
    tables: dict[str, LabelTable],
    classes: list[str],
    outputs: dict[str, tuple[np.ndarray, np.ndarray]],
    thresholds: np.ndarray,
    thumb: Thumb,
    per_list: int,
    predict: Callable[[str], np.ndarray] | None = None,
) -> dict[str, Any]:
    """The error browser's content for test (else valid): `split` and the task's lists (`predict`: a
    segmentation model's predicted foreground of an image, for the lowest-IoU images)."""
    split = next((s for s in ("test", "valid") if s in outputs and s in tables), None)
    if split is None:
        return {"split": None}
    probs, targets = outputs[split]
    table = tables[split]
    if task in ("segmentation", "multilabel_segmentation"):
        return {"split": split, "worst": worst_segmentations(table, classes, probs, per_list, thumb, predict)}
    out: dict[str, Any] = {"split": split}
    if task == "single_label":
        called = probs.argmax(1)[:, None] == np.arange(len(classes))[None, :]
    else:
        called = probs >= thresholds[None, :]
    out["classes"] = class_errors(table, classes, probs, targets, called, per_list, thumb)
    if task == "single_label":
        out["confusion"] = confusion_cells(table, classes, probs, targets, per_list, thumb)
    return out
