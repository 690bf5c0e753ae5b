"""The config's dataclasses (what a config file builds) and `--set` overrides applied to them.

Reading a config file, validating it and the copy written beside a run live in `mlic.config.loading`.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch

from mlic.config.search import SearchRange, Sweep, choice, intrange, loguniform, uniform
from mlic.tasks import get_task
from mlic.utils.early import unset_message
from mlic.utils.errors import ConfigError

# Trainer arguments the stages own; a config sets them through other fields.
TRAINER_OWNED = {
    "max_epochs": "Stage(epochs=...) or epochs",
    "callbacks": "callbacks",
    "logger": "loggers (mlic's own CSV files are always written)",
    "default_root_dir": "output_dir",
}


def monitor_names(task: str) -> tuple[str, ...]:
    """What `monitor` (and `sweep.metric`) may name for `task`: the valid split's columns of metrics.csv."""
    return tuple(f"valid/{c}" for c in get_task(task).columns)


def env_path(name: str = "ROOT_PATH") -> str:
    """Read a path from the environment, or stop with a sentence that says how to set it."""
    value = os.environ.get(name)
    if not value:
        raise ConfigError(unset_message(name))
    return value


@dataclass
class LRFinder:
    """Settings of an LR range test (exponential sweep of the head's LR from `start_lr` to `end_lr`).

    The loss is smoothed over a window `window` decades of LR wide, centred on each point, so the
    smoothed curve does not lag the sweep whatever `num_steps` and the LR span are.
    """

    start_lr: float = 1e-7
    end_lr: float = 10.0
    num_steps: int = 100
    window: float = 0.5
    diverge: float = 4.0
    suggestion: Literal["near_minimum", "edge", "minimum", "steepest", "valley"] = "near_minimum"
    progress: bool = True


@dataclass
class Data:
    """Where the labels and images are and how batches are made."""

    root: str | Path
    images: str = "Images"
    train: str = "train_df.csv"
    valid: str = "valid_df.csv"
    test: str | None = "test_df.csv"
    id_column: str = "Id"
    label_column: str | None = None
    label_separator: str = "|"
    image_pattern: str = "{id}.jpg"
    ignore_columns: list[str] = field(default_factory=list)
    # the classes, in order; for segmentation a dict may map each name to its mask value
    classes: list[str] | dict[str, int] | None = None
    masks: str = "masks"  # segmentation with a CSV of ids: the masks' folder under root
    mask_pattern: str = "{id}.png"  # ... and each mask's file name
    img_size: tuple[int, int] | None = None
    batch_size: int = 32
    num_workers: int | Literal["auto"] = "auto"  # "auto": the CPUs this process has, less one, at most 8
    num_iteration_on_epoch: int | None = None
    augmentations: Callable | None = None
    verify_images: bool = True  # decode every image once before training, so a bad one stops the run early
    max_image_pixels: int | None = 100_000_000  # an image with more (read from its header) is refused
    # decode and resize every image once and keep them in memory: True, False, or "auto" (when they fit)
    cache: bool | Literal["auto"] = "auto"
    cache_memory: float | None = None  # GB the cache may take; None: a quarter of the machine's memory
    # train on this stratified share of the train table (valid and test stay whole)
    data_fraction: float = 1.0


@dataclass
class Model:
    """Which timm model, and which weights it starts from."""

    name: str = (
        "resnet18"  # a timm model; for segmentation an smp architecture (Unet, FPN, DeepLabV3Plus, ...)
    )
    encoder: str | None = None  # segmentation only: the smp encoder ("resnet34" when None; "tu-<timm name>")
    pretrained: bool | str = True
    checkpoint: str | None = None
    freeze_bn: bool = True
    drop_rate: float = 0.0
    kwargs: dict = field(default_factory=dict)
    prior_init: bool = True
    channels_last: bool = True  # weights and batches in channels-last memory order (faster convolutions)
    # torch.compile the model for training and evaluation: False, True, or torch.compile's arguments
    compile: bool | dict = False


@dataclass
class Stage:
    """One fine-tuning stage: its epochs, what is frozen and its learning rates."""

    name: str
    epochs: int
    freeze_backbone: bool = False
    # more to freeze: module-name patterns (["conv1", "layer1.*"]) or a fraction of the backbone's layers
    freeze: list[str] | float | None = None
    lr: float | Literal["find"] | LRFinder | None = None
    backbone_lr_scale: float = 1.0


@dataclass
class SWA:
    """Checkpoint averaging (`swa.py`) and, optionally, an EMA of the weights kept while training.

    `swa.py` averages the `top_k` best checkpoints of `stage` by the config's `monitor` (5 when neither
    `top_k` nor `last_k` is set), or its `last_k` epochs; then it re-estimates BatchNorm statistics
    (`update_bn`). With `ema_decay` set, training keeps an exponential moving average of the weights
    during `stage` and writes it as `model.ema.pth`.
    """

    top_k: int | None = None
    last_k: int | None = None
    stage: str | None = None
    update_bn: bool = True
    ema_decay: float | None = None

    @property
    def k(self) -> int:
        return self.last_k or self.top_k or 5

    @property
    def selection(self) -> str:
        return "last" if self.last_k else "top"


@dataclass
class Mixing:
    """MixUp or CutMix of the training batches (`mlic.data.mixing`): `strategy` "mixup", "cutmix" or "both"
    (one of the two at random per batch), applied to a batch with probability `p`, λ ~ Beta(`alpha`,
    `alpha`)."""

    strategy: Literal["mixup", "cutmix", "both"] = "mixup"
    p: float = 1.0
    alpha: float = 0.4


def _default_optimizer() -> Callable:
    return partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-2)


def _default_scheduler() -> Callable:
    return partial(torch.optim.lr_scheduler.OneCycleLR, pct_start=0.25)


@dataclass(frozen=True)
class ConfigSource:
    """Where a config came from, set by `load_config`: the file it read, that file's text then (the file may
    later be moved aside with its experiment folder), and the `--set` overrides applied after it."""

    path: Path
    text: str
    overrides: tuple[str, ...] = ()


@dataclass
class Config:
    """One experiment: data, model, loss, optimisation and the stages to run."""

    experiment_name: str
    data: Data
    # "multi_label" (sigmoid, mAP), "single_label" (softmax, accuracy), "segmentation" (a class per
    # pixel, softmax, IoU), "multilabel_segmentation" (a mask per class, sigmoid, IoU); see mlic.tasks.base
    task: str = "multi_label"
    model: Model = field(default_factory=Model)
    loss: Callable | None = (
        None  # None: the task's (BCEWithLogitsLoss; CrossEntropyLoss for single_label; Dice+CE for segmentation)
    )
    optimizer: Callable = field(default_factory=_default_optimizer)
    scheduler: Callable | None = field(default_factory=_default_scheduler)
    stages: list[Stage] | None = None
    epochs: int = 10
    callbacks: list = field(default_factory=list)
    monitor: str | None = None  # None: the task's ("valid/map"; "valid/accuracy" for single_label)
    monitor_mode: Literal["min", "max"] | None = None
    threshold: float = 0.5
    # "temperature" or "platt": probabilities calibrated on valid after training (docs/calibration.md)
    calibration: Literal["temperature", "platt"] | None = None
    # "hflip": each image also predicted mirrored, the probabilities averaged, after training (docs/tta.md)
    tta: Literal["hflip"] | None = None
    seed: int = 42
    save_top_k: int = 3
    trainer: dict = field(default_factory=dict)
    output_dir: str = "experiments"
    lr_finder: LRFinder | None = None
    swa: SWA = field(default_factory=SWA)
    mixing: Mixing | None = None
    # Lightning loggers (TensorBoard, MLflow, W&B...) that get every row of metrics.csv, one point an epoch
    loggers: list = field(default_factory=list)
    sweep: Sweep | None = None  # a hyperparameter search, run by `python sweep.py CONFIG`
    log_environment: bool = True  # log versions, devices, git commit and command line as a run starts
    source: ConfigSource | None = field(default=None, repr=False)  # set by load_config; None: built in Python

    def __post_init__(self) -> None:
        # the task's defaults for the fields left out (a bad task name is one sentence)
        task = get_task(self.task)
        if self.loss is None:
            self.loss = task.default_loss()
        if self.monitor is None:
            self.monitor = task.default_monitor

    def resolved_stages(self) -> list[Stage]:
        """The stages to run; a config without `stages` is one full stage of `epochs`."""
        return list(self.stages) if self.stages else [Stage("full", epochs=self.epochs)]

    def resolved_monitor_mode(self) -> str:
        """'min' for a loss, 'max' for everything else, unless `monitor_mode` says otherwise."""
        if self.monitor_mode:
            return self.monitor_mode
        return "min" if self.monitor.endswith("loss") else "max"

    def swa_stage(self) -> str:
        """The stage whose checkpoints `swa.py` averages (and whose EMA is kept): by default the last."""
        return self.swa.stage or self.resolved_stages()[-1].name

    def kept_checkpoints(self, stage: str) -> int:
        """How many checkpoints `stage` keeps: `save_top_k`, or more when SWA wants more."""
        if stage == self.swa_stage():
            return max(self.save_top_k, self.swa.k)
        return self.save_top_k

    @property
    def experiment_dir(self) -> Path:
        return Path(self.output_dir) / self.experiment_name


# ------------------------------------------------------------------------------------------ overrides


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _step_into_list(items: list, part: str, key: str) -> int:
    """Index of `part` in a list field: a position (`stages.0`) or a stage name (`stages.full`)."""
    if part.isdigit() and int(part) < len(items):
        return int(part)
    names = [getattr(item, "name", None) for item in items]
    if part in names:
        return names.index(part)
    raise ConfigError(f"--set {key}: no item {part!r} in the list (items: {', '.join(map(str, names))})")


def apply_override(config: Config, assignment: str) -> None:
    """Apply one `--set key.sub=value` (value parsed as a Python literal, else kept as a string).

    List items are reached by position or by name: `stages.0.epochs=3`, `stages[0].epochs=3` or
    `stages.full.epochs=3`; dict fields and partials by key: `trainer.precision=bf16-mixed`,
    `optimizer.lr=1e-2`.
    """
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. --set data.batch_size=32")
    key, text = assignment.split("=", 1)
    key = key.strip()
    parts = re.sub(r"\[(\w+)\]", r".\1", key).split(".")
    target: Any = config
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(target, list):
            index = _step_into_list(target, part, key)
            if last:
                target[index] = _parse_value(text)
            target = target[index]
            continue
        if isinstance(target, dict) or isinstance(target, partial):
            # dict fields (trainer, model.kwargs) and partials (optimizer, scheduler) take any key
            mapping = target if isinstance(target, dict) else target.keywords
            if last:
                mapping[part] = _parse_value(text)
                continue
            if part not in mapping:
                raise ConfigError(f"--set {key}: {'.'.join(parts[:depth]) or 'config'} has no key {part!r}")
            target = mapping[part]
            continue
        names = [f.name for f in fields(target)] if is_dataclass(target) else []
        if part not in names:
            where = ".".join(parts[:depth]) or "config"
            hint = difflib.get_close_matches(part, names, n=1)
            hint_text = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(
                f"--set {key}: {where} has no field '{part}'{hint_text}; its fields are: {', '.join(names)}"
            )
        if last:
            setattr(target, part, _parse_value(text))
        else:
            target = getattr(target, part)
            if target is None:
                raise ConfigError(f"--set {key}: {'.'.join(parts[: depth + 1])} is None in this config")


__all__ = [
    "Config",
    "Data",
    "Model",
    "Stage",
    "SWA",
    "LRFinder",
    "Mixing",
    "Sweep",
    "SearchRange",
    "loguniform",
    "uniform",
    "intrange",
    "choice",
    "env_path",
    "apply_override",
]
