"""Export a trained model with its preprocessing inside: TorchScript, torch.export and ONNX, each checked.

The exported module takes a batch of uint8 RGB images, N×H×W×3 at the training size, and returns
per-class probabilities: layout, dtype, normalisation and the activation (a sigmoid, or a softmax for a
single-label model) are inside, so a deployment needs nothing from this project. Resizing stays outside (the interpolation to use is written to `export.json`;
resize with antialiasing, as `mlic.data.images.resize` does with Pillow, and as timm and torchvision do).
"""

from __future__ import annotations

import contextlib
import io as _io
import json
import logging
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mlic.config.loading import load_config
from mlic.data.images import list_folder, read_rgb
from mlic.data.tables import read_table
from mlic.evaluate.evaluation import TrainedModel, open_experiment, probabilities
from mlic.experiment.checkpoints import ModelFile
from mlic.experiment.files import CALIBRATION, CONFIG_COPY, EXPORT, MODEL_BEST, THRESHOLDS
from mlic.experiment.lock import experiment_lock
from mlic.metrics.calibration import Calibration
from mlic.tasks import get_task
from mlic.utils import io
from mlic.utils.errors import ConfigError, MlicError, WriteError
from mlic.utils.io import remove_stale_temporaries

log = logging.getLogger("mlic")

FILES = {"torchscript": "model.ts", "export": "model.pt2", "onnx": "model.onnx"}
LABELS = {"torchscript": "TorchScript", "export": "torch.export", "onnx": "ONNX"}
TOLERANCE = {"torchscript": 1e-5, "export": 1e-5, "onnx": 1e-4}


class ExportError(MlicError):
    """An exported model does not give the eager model's answers (or could not be written)."""


class Deployable(nn.Module):
    """uint8 RGB images N×H×W×3 → per-class probabilities N×C (the model's normalisation and the task's
    activation inside: a sigmoid, or a softmax for a single-label model)."""

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        task: str = "multi_label",
        calibration: Calibration | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.task = get_task(task)
        # the same arithmetic as mlic.data.images.ImageTransform: (pixel - 255·mean) / (255·std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        # calibration.json's per-class scale and shift of the logits (1 and 0: none)
        scale, shift = (calibration.scale, calibration.shift) if calibration is not None else (1.0, 0.0)
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).reshape(1, -1))
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32).reshape(1, -1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float()
        logits = self.model((x - self.mean) / self.std).float()
        return self.task.activate(logits * self.scale + self.shift)


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------ images


def check_batch(mf: ModelFile, paths: Sequence[Path], n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` readable images of `paths`: resized uint8 N×H×W×3, and the eager input (normalised)."""
    transform = mf.prep.transform()
    raw, normalised = [], []
    for path in paths:
        try:
            image = read_rgb(str(path))
        except MlicError:
            continue
        raw.append(transform.resized(image))
        normalised.append(transform(image))
        if len(raw) == n:
            break
    if not raw:
        raise ConfigError("no readable image to check the export on; pass --images DIR with a few images")
    return torch.from_numpy(np.stack(raw)), torch.stack(normalised)


# ----------------------------------------------------------------------------------------- formats


@contextlib.contextmanager
def _quiet():
    """The exporters warn (TorchScript is deprecated) and print progress; keep the CLI readable."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(_io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _write(fmt: str, module: Deployable, example: torch.Tensor, path: Path) -> None:
    with _quiet(), torch.no_grad():
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(module, example), str(path))
        elif fmt == "export":
            program = torch.export.export(
                module, (example,), dynamic_shapes={"images": {0: torch.export.Dim.AUTO}}
            )
            with open(path, "wb") as f:  # a file object: torch warns about a name not ending in .pt2
                torch.export.save(program, f)
        else:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=["images"],
                output_names=["probabilities"],
                dynamic_shapes={"images": {0: torch.export.Dim.AUTO}},
                dynamo=True,
                external_data=False,  # one self-contained file (models under 2 GB)
                verbose=False,
            )


def run_exported(fmt: str, path: Path, images: torch.Tensor) -> np.ndarray:
    """Load an exported file the way a deployment would and run it on uint8 images."""
    with _quiet(), torch.no_grad():
        if fmt == "torchscript":
            return torch.jit.load(str(path)).eval()(images).numpy()
        if fmt == "export":
            with open(path, "rb") as f:
                return torch.export.load(f).module()(images).numpy()
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"images": images.numpy()})[0]


def _export_to_temporary(
    fmt: str,
    mf: ModelFile,
    images: torch.Tensor,
    reference: np.ndarray,
    path: Path,
    calibration: Calibration | None = None,
) -> tuple[float, Path]:
    """Export `fmt` to a hidden temporary file beside `path` and check it: (largest difference, file)."""
    module = Deployable(mf.inference_model(), mf.prep.mean, mf.prep.std, mf.task, calibration).eval()
    # traced on 2 images (one repeated if need be), checked on all: the batch size stays free
    example = images[:2] if len(images) >= 2 else images[:1].repeat(2, 1, 1, 1)
    # `.model.pt2.<random>.tmp`: the next export removes it if this one is killed
    tmp = io.temporary_path(path)
    try:
        _write(fmt, module, example, tmp)
        got = run_exported(fmt, tmp, images)
        diff = float(np.abs(got.astype(np.float64) - reference).max())
        if not diff <= TOLERANCE[fmt]:
            raise ExportError(
                f"{LABELS[fmt]} export differs from the eager model by {diff:.2e} on {len(images)} images "
                f"(tolerance {TOLERANCE[fmt]:.0e}); {path.name} was not kept"
            )
        return diff, tmp
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:  # noqa: BLE001 - an exporter failure is reported with the format
        tmp.unlink(missing_ok=True)
        raise ExportError(
            f"{LABELS[fmt]} export of {mf.model_name} failed: {type(e).__name__}: {e}"
        ) from None
    except BaseException:  # Ctrl-C, SIGTERM: no half-written file left behind
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------- experiment


def image_paths(exp_dir: Path, images: Path | None) -> list[Path]:
    """Images to check an export on: `images` (a folder), else the valid split of the experiment's config."""
    if images is not None:
        if not images.is_dir():
            raise ConfigError(f"--images {images} is not a folder")
        return list_folder(images)
    config_path = exp_dir / CONFIG_COPY
    try:
        config = load_config(config_path)
    except ConfigError as e:
        raise ConfigError(
            f"cannot read the validation images through {config_path} ({e}); set what it needs "
            f"(usually ROOT_PATH) or pass --images DIR"
        ) from None
    d = config.data
    return [Path(p) for p in read_table(Path(d.root) / d.valid, d, task=config.task).paths]


def _earlier_files(exp_dir: Path) -> dict[str, Any]:
    """What `export.json` says of files exported earlier (perhaps from other weights) that still exist:
    they stay described until they are replaced."""
    meta_path = exp_dir / EXPORT
    report: dict[str, Any] = {}
    if meta_path.is_file():
        with contextlib.suppress(ValueError, AttributeError):
            report = dict(json.loads(meta_path.read_text(encoding="utf-8")).get("files", {}))
    return {name: entry for name, entry in report.items() if (exp_dir / name).is_file()}


def _write_export_json(exp_dir: Path, trained: TrainedModel, files: dict[str, Any]) -> None:
    """`export.json`: the input a deployment feeds, the output, classes, thresholds and each file."""
    mf = trained.model_file
    thresholds, _ = trained.thresholds()
    thresholds_entry = (  # a single-label model has none: its class is the most probable one
        {
            "thresholds": dict(zip(mf.classes, thresholds.tolist())),
            "thresholds_source": THRESHOLDS if trained.thresholds_path else "threshold",
        }
        if get_task(mf.task).tunes_thresholds
        else {}
    )
    h, w = mf.prep.img_size
    io.write_json(
        exp_dir / EXPORT,
        {
            "weights": trained.path.name,
            "model_name": mf.model_name,
            "input": {
                "dtype": "uint8",
                "layout": "NHWC",
                "channels": "RGB",
                "height": h,
                "width": w,
                "resize_interpolation": mf.prep.interpolation,
                "resize_antialias": True,  # Pillow's resize, as mlic.data.images.resize
            },
            "output": get_task(mf.task).output,
            "tta": mf.tta,  # the views inside every file: "hflip", the image and its mirror, averaged
            "calibration": (
                f"{calibration.method} scaling from {CALIBRATION}, inside every file"
                if (calibration := trained.calibration()) is not None
                else None
            ),
            "task": mf.task,
            "classes": mf.classes,
            **thresholds_entry,
            "files": files,
        },
    )


def export_experiment(
    exp_dir: Path,
    weights: str | Path = MODEL_BEST,
    formats: Sequence[str] = ("torchscript", "export", "onnx"),
    images: Path | None = None,
    num_check: int = 16,
) -> dict[str, Path]:
    """Export `weights` of an experiment to each format (checked against eager) and write `export.json`."""
    exp_dir = Path(exp_dir)
    with experiment_lock(exp_dir, create=False):  # one writer: not while a run writes the folder
        return _export(exp_dir, weights, formats, images, num_check)


def _export(
    exp_dir: Path, weights: str | Path, formats: Sequence[str], images: Path | None, num_check: int
) -> dict[str, Path]:
    trained = open_experiment(exp_dir, weights)
    mf = trained.model_file
    remove_stale_temporaries(exp_dir)
    formats = list(formats)
    if "onnx" in formats and not onnx_available():
        if len(formats) == 1:
            raise ConfigError("ONNX export needs the onnx extra: pip install -e '.[onnx]'")
        log.warning("onnx, onnxscript or onnxruntime is not installed: skipping model.onnx")
        formats.remove("onnx")
    _check_space(exp_dir, trained.path, len(formats))
    uint8, normalised = check_batch(mf, image_paths(exp_dir, images), num_check)
    reference = probabilities(mf.inference_model().eval(), normalised, mf.task)
    calibration = trained.calibration()
    if calibration is not None:  # the exported model returns the calibrated probabilities
        reference = calibration.apply(reference, get_task(mf.task).softmax)
    files = _earlier_files(exp_dir)
    ready: dict[str, Path] = {}  # format -> its checked temporary file
    failure: ExportError | None = None
    try:
        for fmt in formats:
            start = time.time()
            diff, ready[fmt] = _export_to_temporary(
                fmt, mf, uint8, reference, exp_dir / FILES[fmt], calibration
            )
            files[FILES[fmt]] = {
                "format": fmt,
                "weights": trained.path.name,
                "max_abs_diff": diff,
                "tolerance": TOLERANCE[fmt],
                "checked_on_images": len(uint8),
            }
            log.info(
                "%s checked: max |exported - eager| = %.1e on %d images (%.1f s)",
                fmt,
                diff,
                len(uint8),
                time.time() - start,
            )
    except ExportError as e:  # the formats checked before it are still installed and described
        failure = e
    written = _install(exp_dir, trained, files, ready)
    if failure is not None:
        raise failure
    return written


def _check_space(exp_dir: Path, weights: Path, n_formats: int) -> None:
    """Stop before exporting when the folder's disk cannot hold the files (a full disk makes torch's C++
    writers abort the process instead of raising)."""
    needed = 2 * n_formats * weights.stat().st_size + (16 << 20)
    free = shutil.disk_usage(exp_dir).free
    if free < needed:
        raise WriteError(
            f"cannot export into {exp_dir}: {free >> 20} MB free on its disk, the export needs about "
            f"{needed >> 20} MB; free some space"
        )


def _install(
    exp_dir: Path, trained: TrainedModel, files: dict[str, Any], ready: dict[str, Path]
) -> dict[str, Path]:
    """Move the checked files into place and write `export.json` last. `export.json` is removed first,
    so a run killed between the moves leaves no description of a mix of old and new files (rerun the
    export); hidden temporary files a killed run left are removed by the next."""
    (exp_dir / EXPORT).unlink(missing_ok=True)
    written = {}
    for fmt, tmp in ready.items():
        io.move_into_place(tmp, exp_dir / FILES[fmt])
        written[fmt] = exp_dir / FILES[fmt]
        log.info("%s: %s", fmt, written[fmt])
    _write_export_json(exp_dir, trained, {n: e for n, e in files.items() if (exp_dir / n).is_file()})
    return written
