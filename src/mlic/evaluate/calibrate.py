"""Calibration after training (`Config(calibration="temperature")`): fitted on valid's probabilities,
saved as `calibration.json`, applied to every split before thresholds are tuned and metrics reported;
the report gets the expected calibration error (ECE) before and after, per class, and a reliability
diagram (`reliability.png`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # no pyplot: the process's matplotlib backend is left alone

from mlic.config.schema import Config
from mlic.experiment.calibration import write_calibration
from mlic.experiment.files import CALIBRATION, RELIABILITY
from mlic.metrics.calibration import Calibration, expected_calibration_error, fit_calibration, reliability
from mlic.tasks import get_task
from mlic.utils import io
from mlic.utils.markdown import rows_table

Outputs = dict[str, tuple[np.ndarray, np.ndarray]]


Errors = dict[str, tuple[tuple[np.ndarray, float], tuple[np.ndarray, float]]]  # split -> ECE before, after


def apply_calibration(
    calibration: Calibration, config: Config, outputs: Outputs, results: dict[str, dict[str, Any]]
) -> Errors:
    """Calibrate every split of `outputs` in place and recompute its metrics in `results` (the loss stays
    the model's own); return each split's ECE (per class, summary) before and after."""
    task = get_task(config.task)
    ece = {}
    for split, (probs, targets) in list(outputs.items()):
        after = calibration.apply(probs, task.softmax)
        ece[split] = (
            expected_calibration_error(probs, targets, task.softmax),
            expected_calibration_error(after, targets, task.softmax),
        )
        outputs[split] = (after, targets)
        if split in results:
            results[split].update(task.metrics(after, targets, config.threshold))
    return ece


def plot_reliability(before: Outputs, after: Outputs, ece: Errors, softmax: bool, path: Path) -> None:
    """The reliability diagram of each split (test, else valid) before and after calibration: observed
    frequency against confidence, with the diagonal a calibrated model follows."""
    split = "test" if "test" in before else "valid"
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
    for i, (name, outputs, style) in enumerate((("before", before, "o-"), ("after", after, "s-"))):
        confidence, frequency, counts = reliability(*outputs[split], softmax=softmax)
        shown = counts > 0
        ax.plot(confidence[shown], frequency[shown], style, label=f"{name}: ECE {ece[split][i][1]:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"predicted probability ({split}, {'top class' if softmax else 'every class pooled'})")
    ax.set_ylabel("observed frequency")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    io.write_with(path, lambda p: fig.savefig(p, format="png", dpi=100))


def _section(config: Config, classes: list[str], calibrated: Calibration, ece: Errors) -> str:
    rows = [
        {"split": split, "ECE before": f"{b[1]:.4f}", "ECE after": f"{a[1]:.4f}"}
        for split, (b, a) in ece.items()
    ]
    class_rows = []
    for i, name in enumerate(classes):
        row: dict[str, Any] = {"class": name, "scale": f"{calibrated.scale[i]:.3f}"}
        if calibrated.method == "platt":
            row["shift"] = f"{calibrated.shift[i]:+.3f}"
        for split, (before, after) in ece.items():
            row[f"{split} ECE"] = f"{before[0][i]:.4f} → {after[0][i]:.4f}"
        if not calibrated.fitted[i]:
            row["scale"] += " (shared: too few positives in valid)"
        class_rows.append(row)
    return (
        f"\n## Calibration\n\n{calibrated.method} scaling fitted on valid (`{CALIBRATION}`), applied to every "
        f"split above; expected calibration error (ECE, {'top class' if get_task(config.task).softmax else 'mean over classes'}, "
        f"15 bins):\n\n{rows_table(rows, '.4f')}\n\n![reliability]({RELIABILITY})\n\n{rows_table(class_rows, '.4f')}\n"
    )


def calibrate(
    exp_dir: Path, config: Config, classes: list[str], outputs: Outputs, results: dict[str, dict[str, Any]]
) -> str:
    """Fit the config's calibration on valid, save it, calibrate `outputs` and `results` in place, and
    return report.md's section; "" when the config asks for none or there is no valid split."""
    if not config.calibration or "valid" not in outputs:
        return ""
    softmax = get_task(config.task).softmax
    calibration = fit_calibration(*outputs["valid"], config.calibration, softmax)
    write_calibration(exp_dir, classes, calibration)
    before = dict(outputs)
    ece = apply_calibration(calibration, config, outputs, results)
    plot_reliability(before, outputs, ece, softmax, exp_dir / RELIABILITY)
    return _section(config, classes, calibration, ece)


__all__ = ["apply_calibration", "calibrate", "plot_reliability"]
