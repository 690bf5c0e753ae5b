"""Validating a config: every field's type and value, one ConfigError sentence naming the first wrong
one (`validate`)."""

from __future__ import annotations

import copy
import difflib
import inspect
import math
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, Union

import lightning

from mlic.config.schema import (
    TRAINER_OWNED,
    Config,
    Data,
    LRFinder,
    SearchRange,
    apply_override,
    monitor_names,
)
from mlic.tasks import get_task
from mlic.utils.errors import ConfigError


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if tp is Callable or origin is Callable or getattr(tp, "__name__", "") == "Callable":
        return "a callable"
    if origin in (list, tuple, dict):
        return f"a {origin.__name__}"
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if tp is type(None):
        return value is None
    if tp is Callable or origin is Callable:
        return callable(value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is Path:
        return isinstance(value, (str, os.PathLike))
    if origin is list:
        return isinstance(value, (list, tuple)) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return True
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _check_fields(obj: Any, prefix: str, where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        tp = hints[f.name]
        if not _matches(value, tp):
            raise ConfigError(
                f"{where}: field '{name}' must be {_type_name(tp)}, got {value!r} ({type(value).__name__})"
            )
        if is_dataclass(value) and not isinstance(value, type):
            _check_fields(value, f"{name}.", where)
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if is_dataclass(item) and not isinstance(item, type):
                    _check_fields(item, f"{name}[{i}].", where)


def _check_trainer(trainer: dict, where: str) -> None:
    allowed = [n for n in inspect.signature(lightning.Trainer.__init__).parameters if n != "self"]
    for key in trainer:
        if key in TRAINER_OWNED:
            raise ConfigError(
                f"{where}: field 'trainer' must not set {key!r}; use {TRAINER_OWNED[key]} instead"
            )
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            hint_text = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(
                f"{where}: field 'trainer' has {key!r}, which lightning.Trainer does not take{hint_text}"
            )


# fields that earlier releases had, with what replaced them
RENAMED = {
    ("LRFinder", "smoothing"): "the trailing average it set was replaced by a centred window: "
    "set window, its width in decades of LR (default 0.5)",
}


def _check_lr_finder(finder: LRFinder, name: str, where: str) -> None:
    if not 0 < finder.start_lr < finder.end_lr:
        raise ConfigError(
            f"{where}: field '{name}' needs 0 < start_lr < end_lr, got {finder.start_lr} and {finder.end_lr}"
        )
    if finder.num_steps < 5:
        raise ConfigError(f"{where}: field '{name}.num_steps' must be at least 5, got {finder.num_steps}")
    span = math.log10(finder.end_lr / finder.start_lr)
    if not 0 <= finder.window <= span:
        raise ConfigError(
            f"{where}: field '{name}.window' is the smoothing window in decades of LR; it must be between 0 "
            f"and the sweep's {span:g} decades, got {finder.window}"
        )
    if finder.diverge <= 1:
        raise ConfigError(f"{where}: field '{name}.diverge' must be above 1, got {finder.diverge}")


def _check_swa(config: Config, where: str) -> None:
    swa = config.swa
    if swa.top_k is not None and swa.last_k is not None:
        raise ConfigError(f"{where}: field 'swa' sets both top_k and last_k; set one of them")
    for name in ("top_k", "last_k"):
        value = getattr(swa, name)
        if value is not None and value < 2:
            raise ConfigError(f"{where}: field 'swa.{name}' must be at least 2 (an average of one is itself)")
    names = [s.name for s in config.resolved_stages()]
    if swa.stage is not None and swa.stage not in names:
        hint = difflib.get_close_matches(swa.stage, names, n=1)
        hint_text = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ConfigError(
            f"{where}: field 'swa.stage' is {swa.stage!r}, which is not a stage of this config{hint_text}; "
            f"stages: {', '.join(names)}"
        )
    if swa.ema_decay is not None and not 0 < swa.ema_decay < 1:
        raise ConfigError(f"{where}: field 'swa.ema_decay' must be between 0 and 1, got {swa.ema_decay}")


def _check_sweep(config: Config, where: str) -> None:
    sweep = config.sweep
    names = monitor_names(config.task)
    if sweep.metric is not None and sweep.metric not in names:
        raise ConfigError(
            f"{where}: field 'sweep.metric' must be one of {', '.join(names)} for task {config.task!r}, "
            f"got {sweep.metric!r}"
        )
    if sweep.n_trials < 1:
        raise ConfigError(f"{where}: field 'sweep.n_trials' must be at least 1, got {sweep.n_trials}")
    if not sweep.space:
        raise ConfigError(
            f"{where}: field 'sweep.space' is empty; name the fields to search, e.g. "
            f"{{'optimizer.lr': loguniform(1e-5, 1e-2)}}"
        )
    for key, value in sweep.space.items():
        if not isinstance(value, SearchRange):
            raise ConfigError(
                f"{where}: field 'sweep.space[{key!r}]' must be loguniform(...), uniform(...), intrange(...) "
                f"or choice([...]) from mlic, got {type(value).__name__}"
            )
        if value.kind != "categorical" and not value.low < value.high:
            raise ConfigError(
                f"{where}: field 'sweep.space[{key!r}]' needs low < high, got {value.low}, {value.high}"
            )
        if value.kind == "categorical" and not value.choices:
            raise ConfigError(f"{where}: field 'sweep.space[{key!r}]' is choice([]) with nothing to choose")
        if value.log and value.low <= 0:
            raise ConfigError(f"{where}: field 'sweep.space[{key!r}]' is log-scaled, so low must be above 0")
        for example in value.examples():  # each edge on its own copy: a trial may draw it
            trial = copy.deepcopy(config)
            trial.sweep = None
            try:
                apply_override(trial, f"{key}={example!r}")
                _check_partial_argument(trial, key)
                validate(trial, "the trial")
            except ConfigError as e:
                raise ConfigError(
                    f"{where}: field 'sweep.space' names {key!r}, which the config cannot take at "
                    f"{example!r}: {e}"
                ) from None


def _check_partial_argument(config: Config, key: str) -> None:
    """A key into a partial (`optimizer.lr`) must name an argument its function takes: a partial
    accepts any keyword until it is called, which would be at the first trial's first stage."""
    head, _, name = key.rpartition(".")
    target: Any = config
    for part in head.split(".") if head else []:
        target = target.get(part) if isinstance(target, dict) else getattr(target, part, None)
    if isinstance(target, partial):
        try:
            params = inspect.signature(target.func).parameters
        except (TypeError, ValueError):
            return
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if name not in params and not takes_any:
            hint = difflib.get_close_matches(name, list(params), n=1)
            raise ConfigError(
                f"{getattr(target.func, '__name__', target.func)} has no argument {name!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )


def validate(config: Config, where: str = "config") -> Config:
    """Check types and values of every field; raise ConfigError naming the first wrong one."""
    if not isinstance(config, Config):
        raise ConfigError(f"{where}: `config` must be a mlic.Config, got {type(config).__name__}")
    _check_fields(config, "", where)
    if not re.fullmatch(r"[\w.\-]+", config.experiment_name):
        raise ConfigError(
            f"{where}: field 'experiment_name' must be a plain folder name (letters, digits, '_', '-', '.'), "
            f"got {config.experiment_name!r}"
        )
    _check_data(config.data, where)
    _check_extras(config, where)
    _check_task(config, where)
    _check_stages(config, where)
    _check_trainer(config.trainer, where)
    if config.lr_finder is not None:
        _check_lr_finder(config.lr_finder, "lr_finder", where)
    if config.save_top_k < 1:
        raise ConfigError(f"{where}: field 'save_top_k' must be at least 1, got {config.save_top_k}")
    _check_swa(config, where)
    if config.calibration and get_task(config.task).pixelwise:
        raise ConfigError(
            f"{where}: field 'calibration' calibrates per-image class probabilities; task "
            f"{config.task!r} predicts pixels: set calibration=None"
        )
    return config


def _check_data(d: Data, where: str) -> None:
    if d.img_size is not None and any(s <= 0 for s in d.img_size):
        raise ConfigError(f"{where}: field 'data.img_size' must be two positive ints (height, width)")
    if d.batch_size <= 0:
        raise ConfigError(f"{where}: field 'data.batch_size' must be positive, got {d.batch_size}")
    if d.num_workers != "auto" and not (isinstance(d.num_workers, int) and d.num_workers >= 0):
        raise ConfigError(
            f"{where}: field 'data.num_workers' must be 0 or more, or 'auto', got {d.num_workers!r}"
        )
    if d.cache not in (True, False, "auto"):
        raise ConfigError(f"{where}: field 'data.cache' must be True, False or 'auto', got {d.cache!r}")
    if d.cache_memory is not None and d.cache_memory <= 0:
        raise ConfigError(
            f"{where}: field 'data.cache_memory' must be a positive number of GB, got {d.cache_memory}"
        )
    if d.max_image_pixels is not None and d.max_image_pixels < 1:
        raise ConfigError(
            f"{where}: field 'data.max_image_pixels' must be a positive number of pixels, or None for no "
            f"limit, got {d.max_image_pixels}"
        )
    if not 0.0 < d.data_fraction <= 1.0:
        raise ConfigError(
            f"{where}: field 'data.data_fraction' must be above 0 and at most 1, got {d.data_fraction}"
        )
    if d.num_iteration_on_epoch is not None and d.num_iteration_on_epoch <= 0:
        raise ConfigError(
            f"{where}: field 'data.num_iteration_on_epoch' must be positive or None, "
            f"got {d.num_iteration_on_epoch}"
        )
    if "{id}" not in d.image_pattern:
        raise ConfigError(
            f"{where}: field 'data.image_pattern' must contain '{{id}}', got {d.image_pattern!r}"
        )


def _check_extras(config: Config, where: str) -> None:
    """The sweep, the loggers, mixing and the threshold."""
    if config.sweep is not None:
        _check_sweep(config, where)
    for i, logger in enumerate(config.loggers):
        if not callable(getattr(logger, "log_metrics", None)):
            raise ConfigError(
                f"{where}: field 'loggers[{i}]' is a {type(logger).__name__}, not a Lightning logger "
                f"(e.g. lightning.pytorch.loggers.TensorBoardLogger('experiments/tb'))"
            )
    if config.mixing is not None:
        m = config.mixing
        if not 0.0 <= m.p <= 1.0:
            raise ConfigError(f"{where}: field 'mixing.p' must be a probability between 0 and 1, got {m.p}")
        if not m.alpha > 0:
            raise ConfigError(
                f"{where}: field 'mixing.alpha' must be above 0 (λ ~ Beta(alpha, alpha)), got {m.alpha}"
            )
    if not 0.0 < config.threshold < 1.0:
        raise ConfigError(f"{where}: field 'threshold' must be between 0 and 1, got {config.threshold}")


def _check_task(config: Config, where: str) -> None:
    """What the task allows: mask values as classes, mixing, the monitor."""
    task = get_task(config.task)  # a task set by --set is checked here
    if isinstance(config.data.classes, dict):
        if not task.pixelwise:
            raise ConfigError(
                f"{where}: field 'data.classes' maps names to mask values, which only segmentation masks "
                f"have; for task {config.task!r} list the class names"
            )
        bad = [k for k, v in config.data.classes.items() if not (isinstance(v, int) and 0 <= v <= 255)]
        if bad:
            raise ConfigError(
                f"{where}: field 'data.classes': class {bad[0]!r} maps to {config.data.classes[bad[0]]!r}; "
                f"a mask value is a whole number from 0 to 255"
            )
    if task.pixelwise and config.mixing is not None:
        raise ConfigError(
            f"{where}: field 'mixing' (MixUp/CutMix) mixes classification targets; it is not available for "
            f"task {config.task!r}"
        )
    if config.monitor not in monitor_names(config.task):
        names = ", ".join(monitor_names(config.task))
        raise ConfigError(
            f"{where}: field 'monitor' must be one of {names} for task {config.task!r}, got {config.monitor!r}"
        )


def _check_stages(config: Config, where: str) -> None:
    if config.epochs <= 0:
        raise ConfigError(f"{where}: field 'epochs' must be positive, got {config.epochs}")
    if config.stages is not None and len(config.stages) == 0:
        raise ConfigError(f"{where}: field 'stages' is empty; leave it out for one full stage")
    seen: set[str] = set()
    for i, stage in enumerate(config.resolved_stages()):
        if stage.epochs <= 0:
            raise ConfigError(f"{where}: field 'stages[{i}].epochs' must be positive, got {stage.epochs}")
        if stage.name in seen:
            raise ConfigError(f"{where}: two stages are named {stage.name!r}; stage names must be unique")
        if isinstance(stage.lr, (int, float)) and stage.lr <= 0:
            raise ConfigError(f"{where}: field 'stages[{i}].lr' must be positive, got {stage.lr}")
        if isinstance(stage.lr, LRFinder):
            _check_lr_finder(stage.lr, f"stages[{i}].lr", where)
        if stage.backbone_lr_scale < 0:
            raise ConfigError(
                f"{where}: field 'stages[{i}].backbone_lr_scale' must be 0 or more, got {stage.backbone_lr_scale}"
            )
        seen.add(stage.name)
