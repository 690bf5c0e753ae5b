"""`results.json`: the metrics of each trained model of an experiment, for tools to read (report.md
says the same in prose). Written by `train.py` when it evaluates the best model, and by `swa.py` for
the best, SWA and EMA models; `python -m mlic.compare` reads it.

```json
{"task": "multi_label",
 "models": {"best": {"valid": {"loss": 0.21, "map": 0.73}, "test": {"map": 0.71}},
            "swa": {"valid": {...}, "test": {...}}, "ema": {...}}}
```
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mlic.experiment.files import RESULTS
from mlic.utils import io

RESULTS_FILE = RESULTS
MODELS = ("best", "swa", "ema")  # the model files whose metrics it holds: model.<name>.pth

Results = dict[str, dict[str, float]]  # split -> metric -> value


def _plain(results: Results) -> Results:
    """JSON numbers (a NaN, which JSON has not, becomes null)."""
    return {
        split: {k: (float(v) if math.isfinite(float(v)) else None) for k, v in values.items()}
        for split, values in results.items()
    }


def read_results(exp_dir: Path) -> dict[str, Any] | None:
    """The experiment's results.json, or None when it has none or it cannot be read."""
    try:
        data = json.loads((Path(exp_dir) / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        return None
    return data


def write_results(exp_dir: Path, task: str, models: dict[str, Results]) -> Path:
    """Set the metrics of the models named in `models` ("best", "swa", "ema"), keeping the others'."""
    unknown = set(models) - set(MODELS)
    if unknown:
        raise ValueError(f"results.json holds the models {MODELS}, not {sorted(unknown)}")
    path = Path(exp_dir) / RESULTS_FILE
    earlier = read_results(exp_dir) or {}
    kept = earlier.get("models", {}) if earlier.get("task") == task else {}
    data = {"task": task, "models": {**kept, **{name: _plain(r) for name, r in models.items()}}}
    io.write_text(path, json.dumps(data, indent=1) + "\n")
    return path
