"""`calibration.json`: the calibration fitted on valid for one model file of the experiment (by default
`model.best.pth`), per class its logits' `scale` and `shift` (`mlic.metrics.calibration`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlic.experiment.files import CALIBRATION, MODEL_BEST
from mlic.metrics.calibration import METHODS, Calibration
from mlic.utils import io
from mlic.utils.errors import DataError


def write_calibration(
    exp_dir: Path, classes: Sequence[str], calibration: Calibration, model: str = MODEL_BEST
) -> Path:
    """Save `calibration` for the model file named `model`."""
    path = Path(exp_dir) / CALIBRATION
    per_class = {
        c: {"scale": float(a), "shift": float(b), "fitted": bool(f)}
        for c, a, b, f in zip(classes, calibration.scale, calibration.shift, calibration.fitted)
    }
    io.write_json(path, {"method": calibration.method, "model": model, "classes": per_class})
    return path


def read_calibration(exp_dir: Path, classes: Sequence[str], model: str = MODEL_BEST) -> Calibration | None:
    """The calibration of the model file named `model`; None when the experiment has none, or has one
    for another model file (an average, another run's weights: their logits are not the ones fitted)."""
    path = Path(exp_dir) / CALIBRATION
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"calibration file {path} is not valid JSON ({e}); delete it or fix it") from None
    if (
        not isinstance(saved, dict)
        or saved.get("method") not in METHODS
        or not isinstance(saved.get("classes"), dict)
    ):
        raise DataError(
            f'calibration file {path} must read {{"method": "temperature", "model": "{MODEL_BEST}", '
            f'"classes": {{"<class>": {{"scale": ..., "shift": ...}}}}}}; delete it or fix it'
        )
    if saved.get("model", MODEL_BEST) != model:
        return None
    entries = saved["classes"]
    if list(entries) != list(classes):
        raise DataError(f"calibration file {path} does not list the model's classes in their order")
    try:
        scale = np.array([float(entries[c]["scale"]) for c in classes])
        shift = np.array([float(entries[c]["shift"]) for c in classes])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"calibration file {path}: every class needs a number for scale and shift") from None
    if not (np.isfinite(scale).all() and np.isfinite(shift).all() and (scale > 0).all()):
        raise DataError(f"calibration file {path}: every scale must be a positive number, every shift finite")
    fitted = np.array([bool(entries[c].get("fitted", True)) for c in classes])
    return Calibration(saved["method"], scale, shift, fitted)


__all__ = ["read_calibration", "write_calibration"]
