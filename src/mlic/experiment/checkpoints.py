"""The experiment folder's file formats, each writer beside its reader.

- model files (`model.best.pth`, `model.last.pth`, `model.ema.pth`, `model.swa.pth`): a plain dict
  loadable with `torch.load(weights_only=True)`: `model_file` writes, `load_model_file` reads;
- the `"mlic"` key of every Lightning checkpoint (stage, epoch, metrics): `checkpoint_info` writes,
  `read_info` reads;
- `thresholds.json` (per-class thresholds): `write_thresholds`, `read_thresholds`;
- `metrics.csv` (one row per epoch and stage): `write_metrics`, `read_metrics`;
- any of them as bare weights: `mlic.models.weights`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mlic.config.schema import Config
from mlic.data.images import Preprocessing
from mlic.experiment.files import MODEL_BEST, THRESHOLDS
from mlic.models.architectures import build_network
from mlic.models.tta import VIEWS, FlipTTA
from mlic.models.weights import read_state_dict, unreadable
from mlic.tasks import get_task
from mlic.utils import io
from mlic.utils.errors import CheckpointError, ConfigError, DataError

# --------------------------------------------------------------------------------------- model files


def _plain(value: Any) -> bool:
    """True for values `torch.load(weights_only=True)` reads back: numbers, strings and lists of them."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def model_file(
    model: nn.Module, config: Config, classes: list[str], prep: Preprocessing, metrics: dict[str, Any]
) -> dict[str, Any]:
    """The plain-dict model file (`model.best.pth` and its kin): loadable with `weights_only=True`."""
    return {
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "model_name": config.model.name,
        "classes": list(classes),
        "img_size": list(prep.img_size),
        "normalization": {
            "mean": list(prep.mean),
            "std": list(prep.std),
            "interpolation": prep.interpolation,
        },
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
        # what rebuilding the model and thresholding its output need, without the config
        "model_kwargs": {k: v for k, v in config.model.kwargs.items() if _plain(v)},
        "encoder": config.model.encoder,  # a segmentation model's smp encoder (None for timm models)
        "threshold": config.threshold,
        "task": config.task,  # how its outputs become probabilities (mlic.tasks.base)
        "tta": config.tta,  # the test-time augmentation it is predicted with (mlic.models.tta)
    }


@dataclass
class ModelFile:
    """A model file (`model.best.pth`, `model.swa.pth`, ...) rebuilt as a ready-to-run eval-mode model."""

    model: nn.Module
    model_name: str
    classes: list[str]
    prep: Preprocessing
    threshold: float
    metrics: dict[str, Any]
    task: str = "multi_label"
    tta: str | None = None  # Config(tta=...) of the run that wrote it

    def inference_model(self) -> nn.Module:
        """The model as it predicts: with its test-time augmentation (`FlipTTA`) when it has one."""
        if self.tta is None:
            return self.model
        task = get_task(self.task)
        return FlipTTA(self.model, task.softmax, task.pixelwise).eval()


def load_model_file(path: Path) -> ModelFile:
    """Rebuild the timm model a mlic model file describes and load its weights (nothing is downloaded)."""
    path = Path(path)
    state, meta = read_state_dict(path, "model file")
    missing = [k for k in ("model_name", "classes", "img_size", "normalization") if k not in meta]
    if missing:
        raise CheckpointError(
            f"model file {path} is not a mlic model file (it has no {', '.join(missing)}); use the "
            f"model.best.pth, model.last.pth or model.swa.pth of an experiment"
        )
    kwargs = dict(meta.get("model_kwargs") or {})
    task = str(meta.get("task", "multi_label"))  # model files from before tasks are multi-label
    try:
        family = get_task(task).family
        model = build_network(family, meta["model_name"], len(meta["classes"]), kwargs, meta.get("encoder"))
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ConfigError) as e:
        raise CheckpointError(
            f"model file {path} cannot be loaded into {meta['model_name']!r}: {e}"
        ) from None
    norm = meta["normalization"]
    prep = Preprocessing(
        tuple(meta["img_size"]),
        tuple(norm["mean"]),
        tuple(norm["std"]),
        norm.get("interpolation", "bilinear"),
    )
    return ModelFile(
        model.eval(),
        meta["model_name"],
        list(meta["classes"]),
        prep,
        float(meta.get("threshold", 0.5)),
        dict(meta.get("metrics", {})),
        task,
        meta.get("tta") if meta.get("tta") in VIEWS else None,
    )


def model_file_metrics(path: Path) -> dict[str, Any]:
    """The `metrics` a model file recorded (stage, epoch and the values of that epoch)."""
    _, meta = read_state_dict(path, "model file")
    return dict(meta.get("metrics", {}))


def earlier_runs(exp_dir: Path) -> list[Path]:
    """Folders an experiment's earlier runs were moved to (`<name>.<date-time>`), oldest first."""
    exp_dir = Path(exp_dir)
    return sorted(p for p in exp_dir.parent.glob(f"{exp_dir.name}.*") if p.is_dir())


def resolve_model_file(exp_dir: Path, weights: str | Path = MODEL_BEST) -> Path:
    """The model file `weights` inside the experiment folder, else `weights` as a path; else one sentence
    saying what the folder holds (and where its previous run went, if a rerun moved it)."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise CheckpointError(f"experiment folder {exp_dir} does not exist; pass the folder train.py wrote")
    for candidate in (exp_dir / weights, Path(weights)):
        if candidate.is_file():
            return candidate
    held = sorted(p.name for p in exp_dir.glob("*.pth"))
    holds = f"it holds {', '.join(held)}" if held else "it holds no model file (*.pth)"
    raise CheckpointError(
        f"model file {weights} is not in {exp_dir} nor a file; {holds}{moved_note(exp_dir)}"
    )


def moved_note(exp_dir: Path) -> str:
    """ "; the previous run of this experiment was moved to ..." when a rerun set one aside, else ""."""
    older = earlier_runs(exp_dir)
    return f"; the previous run of this experiment was moved to {older[-1]}" if older else ""


# ------------------------------------------------------------------ the "mlic" key of a checkpoint

CHECKPOINT_KEY = "mlic"
_NAME = re.compile(r"^(?P<stage>.+)-epoch(?P<epoch>\d+)")


def checkpoint_info(stage: str, epoch: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What a Lightning checkpoint carries under `CHECKPOINT_KEY`, so that swa.py and --resume can rank
    and order checkpoints without reading metrics.csv."""
    return {"stage": stage, "epoch": int(epoch), "metrics": {k: float(v) for k, v in metrics.items()}}


@dataclass
class CheckpointInfo:
    """What a training run recorded about one checkpoint: its stage, epoch and metrics."""

    path: Path
    stage: str | None
    epoch: int | None
    metrics: dict[str, float]


def read_info(path: Path) -> CheckpointInfo:
    """Stage, epoch and metrics of a Lightning checkpoint written by `train.py` (memory-mapped read)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same sentence
        raise CheckpointError(unreadable("checkpoint", path, e)) from None
    info = obj.get(CHECKPOINT_KEY) if isinstance(obj, dict) else None
    if isinstance(info, dict):
        return CheckpointInfo(path, info.get("stage"), info.get("epoch"), dict(info.get("metrics", {})))
    match = _NAME.match(path.stem)  # a checkpoint from elsewhere: its name is all there is
    epoch = obj.get("epoch") if isinstance(obj, dict) else None
    return CheckpointInfo(
        path, match["stage"] if match else None, epoch + 1 if isinstance(epoch, int) else None, {}
    )


# ---------------------------------------------------------------------------------- thresholds.json


def thresholds_file(exp_dir: Path) -> Path:
    """Where an experiment keeps its per-class thresholds."""
    return Path(exp_dir) / THRESHOLDS


def write_thresholds(exp_dir: Path, classes: Sequence[str], thresholds: np.ndarray) -> Path:
    """Save per-class thresholds as `thresholds.json` ({class: threshold}), unrounded: a tuned threshold
    sits midway between two probabilities that may differ by 1e-7."""
    path = thresholds_file(exp_dir)
    io.write_json(path, {c: float(t) for c, t in zip(classes, thresholds)})
    return path


def read_thresholds(
    exp_dir: Path, classes: Sequence[str], default: float | None
) -> tuple[np.ndarray | None, str]:
    """Per-class thresholds from the experiment's `thresholds.json`, else `default` for every class
    (None when `default` is None).

    Returns the thresholds in `classes` order and a sentence saying where they came from.
    """
    path = thresholds_file(exp_dir)
    if not path.is_file():
        if default is None:
            return None, f"no {path}"
        return (
            np.full(len(classes), float(default)),
            f"threshold {default:g} for every class (the model file's; no {path})",
        )
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"thresholds file {path} is not valid JSON ({e}); delete it or fix it") from None
    if not isinstance(saved, dict):
        raise DataError(f'thresholds file {path} must map each class to a number, like {{"Drama": 0.41}}')
    missing = [c for c in classes if c not in saved]
    extra = [str(c) for c in saved if c not in classes]
    if missing or extra:
        parts = [f"lacks {', '.join(missing[:5])}"] if missing else []
        parts += [f"has {', '.join(extra[:5])}, which the model does not predict"] if extra else []
        raise DataError(
            f"thresholds file {path} does not match the model's classes: it {' and '.join(parts)}"
        )
    bad = [c for c in classes if not _is_number(saved[c])]
    if bad:
        raise DataError(
            f"thresholds file {path}: the threshold of {bad[0]!r} is {saved[bad[0]]!r}, not a number"
        )
    return np.array([float(saved[c]) for c in classes]), f"per-class thresholds from {path}"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# -------------------------------------------------------------------------------------- metrics.csv


# the first columns of metrics.csv, in this order whatever the stages; the metrics follow
LEADING_COLUMNS = ("stage", "epoch", "step", "lr_head", "lr_backbone", "train/loss")


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """`metrics.csv`: one row per epoch and stage; `LEADING_COLUMNS`, then the rest in first-seen order
    with `time_s` last (a frozen backbone's first stage has no `lr_backbone`: its cells stay empty)."""
    df = pd.DataFrame(rows)
    rest = [c for c in df.columns if c not in LEADING_COLUMNS and c != "time_s"]
    columns = [c for c in LEADING_COLUMNS if c in df.columns or c == "lr_backbone"] + rest
    columns += ["time_s"] if "time_s" in df.columns else []
    df = df.reindex(columns=columns)
    io.write_with(path, lambda p: df.to_csv(p, index=False))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of `metrics.csv` as dicts, without the cells an epoch left empty."""
    # stage names stay text whatever they look like ("1", "NA"); only empty cells are missing values
    try:
        df = pd.read_csv(path, dtype={"stage": str}, keep_default_na=False, na_values=[""])
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{path} cannot be read ({type(e).__name__}: {e}); restore it or train anew"
        ) from None
    if not {"stage", "epoch"} <= set(df.columns):
        raise CheckpointError(f"{path} has no stage and epoch columns; restore it or train anew")
    return [
        {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
        for row in df.to_dict("records")
    ]
