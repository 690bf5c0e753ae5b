"""Checkpoint averaging (SWA over saved checkpoints): choose them, average them streaming in float64,
re-estimate BatchNorm statistics, and compare the result with the best single checkpoint."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from mlic.config.schema import Config
from mlic.data.loaders import make_loader
from mlic.data.tables import LabelTable
from mlic.engine.runtime import training_device
from mlic.evaluate.evaluation import Results, TrainedModel, eval_module, evaluate, open_experiment
from mlic.evaluate.report import write_swa_report
from mlic.evaluate.report_page import write_page
from mlic.experiment.checkpoints import CheckpointInfo, model_file, moved_note, read_info
from mlic.experiment.files import CHECKPOINTS, MODEL_BEST, MODEL_EMA, MODEL_SWA
from mlic.experiment.lock import experiment_lock
from mlic.experiment.results import write_results
from mlic.models.build import create_model, frozen_norm_modules, frozen_parameter_names
from mlic.models.weights import load_weights, read_state_dict, state_differences
from mlic.utils import io
from mlic.utils.errors import CheckpointError, ConfigError
from mlic.utils.progress import progress, shows_progress

log = logging.getLogger("mlic")


def average_checkpoints(
    paths: Sequence[Path], load: Callable[[Path], dict[str, torch.Tensor]] = load_weights
) -> dict[str, torch.Tensor]:
    """The parameter-wise mean of the checkpoints at `paths`, holding one checkpoint at a time.

    Floating-point tensors are summed in float64 and stored back in their own dtype. Integer buffers
    (BatchNorm's `num_batches_tracked`) are not averaged: they count steps, so the value of the last
    checkpoint in `paths` is kept.
    """
    if len(paths) < 2:
        raise CheckpointError(f"averaging needs at least two checkpoints, got {len(paths)}")
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for i, path in enumerate(paths):
        state = load(path)
        if i == 0:
            dtypes = {k: v.dtype for k, v in state.items()}
            total = {k: (v.double() if v.is_floating_point() else v.clone()) for k, v in state.items()}
        else:
            diff = state_differences(total, state)
            if diff:
                how = "holds other tensors than" if diff.missing or diff.unexpected else "does not match"
                raise CheckpointError(
                    f"checkpoint {path} {how} {paths[0]} ({diff.first()}); average checkpoints of one "
                    f"architecture and class list only"
                )
            for key, value in state.items():
                if value.is_floating_point():
                    total[key] += value.double()
                else:
                    total[key] = value.clone()
        del state  # only the running sum and one checkpoint are ever resident
    n = len(paths)
    return {k: (v / n).to(dtypes[k]) if dtypes[k].is_floating_point else v for k, v in total.items()}


# ------------------------------------------------------------------------------- choosing checkpoints


def _describe(infos: list[CheckpointInfo], stage: str) -> str:
    if not infos:
        return "no checkpoints"
    mine = [i.path.name for i in infos if i.stage == stage]
    other = [i.path.name for i in infos if i.stage != stage]
    parts = [f"{len(mine)} of stage {stage!r}" + (f" ({', '.join(mine)})" if mine else "")]
    if other:
        parts.append(f"{len(other)} of other stages ({', '.join(other)})")
    return " and ".join(parts)


def select_checkpoints(
    folder: Path, stage: str, selection: str, k: int, monitor: str, mode: str
) -> list[CheckpointInfo]:
    """The `k` best (`selection="top"`, by `monitor`) or last checkpoints of `stage` in `folder`,
    in epoch order. Fewer than two is an error that says what the folder holds."""
    # `<stage>-last.ckpt` (kept for --resume) repeats the latest epoch: not a candidate of its own
    paths = (
        sorted(p for p in folder.glob("*.ckpt") if not p.stem.endswith("-last")) if folder.is_dir() else []
    )
    infos = [read_info(p) for p in paths]
    candidates = [i for i in infos if i.stage == stage]
    if len(candidates) < 2:
        raise CheckpointError(
            f"{folder} holds {_describe(infos, stage)}; averaging needs at least two checkpoints of one stage: "
            f"train more epochs, choose another stage with --stage, or name files with --checkpoints"
        )
    if selection == "top":
        unranked = [i.path.name for i in candidates if not _finite(i.metrics.get(monitor))]
        if unranked:
            raise CheckpointError(
                f"checkpoint {folder / unranked[0]} records no value of {monitor}, so the best cannot be "
                f"chosen; use --last-k or --checkpoints"
            )
        ranked = sorted(candidates, key=lambda i: i.metrics[monitor], reverse=mode == "max")
        chosen = ranked[:k]
    else:
        chosen = sorted(candidates, key=lambda i: i.epoch or 0)[-k:]
    if len(chosen) < k:
        log.warning(
            "asked for %d checkpoints of stage %s but %s holds %d; averaging those",
            k,
            stage,
            folder,
            len(chosen),
        )
    return sorted(chosen, key=lambda i: i.epoch or 0)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# ----------------------------------------------------------------------------------------- BatchNorm


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def reestimate_bn(
    model: nn.Module, loader: Iterable, device: torch.device | str = "cpu", show_progress: bool = True
) -> bool:
    """Recompute every BatchNorm layer's running statistics with one pass over `loader`.

    Uses `torch.optim.swa_utils.update_bn` (a cumulative average over batches; `(images, targets)`
    batches are understood). Returns False, doing nothing, for a model without BatchNorm.
    """
    if not has_batchnorm(model):
        return False
    model.to(device)
    with torch.no_grad():
        total = len(loader) if hasattr(loader, "__len__") else None
        update_bn(
            progress(loader, total, "BatchNorm re-estimation", show_progress),
            model,
            device=torch.device(device),
        )
    return True


# --------------------------------------------------------------------------------------------- swa.py


def _reference_loader(config: Config, exp_dir: Path, classes: list[str], model: nn.Module) -> Callable:
    """`load` for average_checkpoints that refuses files of another model or class list."""
    own = model.state_dict()
    what = f"the config's model {config.model.name!r} with {len(classes)} classes"

    def load(path: Path) -> dict[str, torch.Tensor]:
        state, meta = read_state_dict(Path(path), "checkpoint")
        if meta.get("model_name") not in (None, config.model.name):
            raise CheckpointError(
                f"checkpoint {path} was trained as {meta['model_name']!r}, not as {what}; "
                f"average checkpoints of {exp_dir} only"
            )
        if meta.get("classes") is not None and list(meta["classes"]) != list(classes):
            raise CheckpointError(
                f"checkpoint {path} has another class list than {exp_dir / 'classes.json'}; "
                f"average checkpoints of one experiment only"
            )
        diff = state_differences(own, state)
        if diff:
            raise CheckpointError(
                f"checkpoint {path} does not fit {what} ({diff.first()}); average checkpoints of {exp_dir} only"
            )
        return state

    return load


def _named_checkpoints(checkpoints: Sequence[str | Path]) -> list[Path]:
    """The files `--checkpoints` names, checked: at least two, each existing, none twice."""
    paths = [Path(p) for p in checkpoints]
    if len(paths) < 2:
        raise CheckpointError(f"--checkpoints names {len(paths)} file; averaging needs at least two")
    for p in paths:
        if not p.is_file():
            raise CheckpointError(f"checkpoint {p} does not exist")
    seen = [p.resolve() for p in paths]
    twice = next((p for i, p in enumerate(paths) if seen[i] in seen[:i]), None)
    if twice is not None:
        raise ConfigError(f"--checkpoints names {twice} twice; name each checkpoint once")
    stages = sorted({i.stage for i in map(read_info, paths) if i.stage})
    if len(stages) > 1:
        log.warning("--checkpoints mixes stages (%s); averaging them as asked", ", ".join(stages))
    return paths


def _choose(
    config: Config, checkpoints: Sequence[str | Path] | None, selection: str, k: int, stage: str
) -> tuple[list[Path], str]:
    """The checkpoints to average and, for the report, how they were chosen."""
    names = [s.name for s in config.resolved_stages()]
    if stage not in names and not checkpoints:
        raise ConfigError(f"--stage {stage}: the config has no such stage (stages: {', '.join(names)})")
    if checkpoints:
        return _named_checkpoints(checkpoints), "named on the command line"
    folder = config.experiment_dir / CHECKPOINTS
    infos: list[CheckpointInfo] = select_checkpoints(
        folder, stage, selection, k, config.monitor, config.resolved_monitor_mode()
    )
    paths = [i.path for i in infos]
    if selection == "top":
        return paths, f"the {len(paths)} best of stage `{stage}` by `{config.monitor}`"
    return paths, f"the last {len(paths)} epochs of stage `{stage}`"


def _batchnorm(
    config: Config, model: nn.Module, stage: str, named: bool, train: LabelTable, loader: Any, update: bool
) -> str:
    """Re-estimate the averaged model's BatchNorm statistics when that is right; say what was done."""
    stage_cfg = next((s for s in config.resolved_stages() if s.name == stage), None)
    frozen = bool(stage_cfg and stage_cfg.freeze_backbone and config.model.freeze_bn)
    if not update:
        return "BatchNorm statistics were averaged, not re-estimated (update_bn off)"
    if frozen and not named:
        return (
            f"BatchNorm statistics kept as trained: stage {stage} froze the backbone and its BatchNorm "
            f"(model.freeze_bn), so the head was trained against them"
        )
    # BatchNorm layers the stage froze by `freeze` kept their statistics in training: kept here too
    kept = []
    if stage_cfg is not None and stage_cfg.freeze is not None and config.model.freeze_bn:
        names = frozen_parameter_names(model, False, stage_cfg.freeze, f"stages.{stage}.freeze")
        kept = [(m, copy.deepcopy(m.state_dict())) for m in frozen_norm_modules(model, names, False)]
    if reestimate_bn(model, loader, training_device(config), shows_progress(config.trainer)):
        for m, state in kept:
            m.load_state_dict(state)
        but = f" (the {len(kept)} the stage froze kept theirs)" if kept else ""
        return (
            f"BatchNorm statistics re-estimated with one pass over the {len(train)} training "
            f"images, without augmentation{but}"
        )
    return "the model has no BatchNorm layers, so there were no statistics to re-estimate"


@dataclass
class SWARun:
    """What `run_swa` did: the averaged model file, what went into it, and the comparison."""

    path: Path  # model.swa.pth
    averaged: list[Path]  # the checkpoints averaged
    how: str  # how they were chosen
    bn_text: str  # what was done with BatchNorm statistics
    results: Results  # "swa/valid", "best/test", "ema/valid", ... -> metric -> value
    set_aside: Path | None  # where an earlier model.swa.pth was moved
    verdict: str = ""  # which model to keep, by the monitor on valid


def swa_verdict(results: Results, monitor: str, mode: str) -> str:
    """One sentence: whether the average beats model.best.pth on valid by the monitor, and which to keep
    (chosen on valid, never on test)."""
    metric = monitor.split("/", 1)[1]
    swa, best = results.get("swa/valid", {}).get(metric), results.get("best/valid", {}).get(metric)
    if swa is None or best is None:
        return ""
    better = swa > best if mode == "max" else swa < best
    keep = (
        "use it: `--weights model.swa.pth` with --test, export.py and predict.py"
        if better
        else "keep model.best.pth (model.swa.pth stays beside it)"
    )
    verb = "beats" if better else "does not beat"
    return f"on valid the average {verb} model.best.pth by {monitor}: {swa:.4f} against {best:.4f}; {keep}"


def _open_best(config: Config) -> TrainedModel:
    """The experiment's `model.best.pth` with the config's label tables (same classes, same model)."""
    exp_dir = config.experiment_dir
    best_path = exp_dir / MODEL_BEST
    if not best_path.is_file():
        raise CheckpointError(
            f"{best_path} does not exist: train the experiment first (`python train.py CONFIG`); "
            f"swa.py averages the checkpoints a training run kept{moved_note(exp_dir)}"
        )
    best = open_experiment(exp_dir, best_path.name, config)
    if best.model_file.model_name != config.model.name:
        raise CheckpointError(
            f"{best_path} was trained as {best.model_file.model_name!r} but the config builds "
            f"{config.model.name!r}; run swa.py with the config that trained {exp_dir}"
        )
    return best


def run_swa(
    config: Config,
    checkpoints: Sequence[str | Path] | None = None,
    selection: str | None = None,
    k: int | None = None,
    stage: str | None = None,
    update_bn: bool | None = None,
) -> SWARun:
    """Average checkpoints of `config`'s experiment into `model.swa.pth`, re-estimate BatchNorm, and
    compare it with `model.best.pth` (and `model.ema.pth` when present) on valid and test."""
    with experiment_lock(config.experiment_dir, create=False):  # one writer: not while a run writes it
        return _average(config, checkpoints, selection, k, stage, update_bn)


def _average(
    config: Config,
    checkpoints: Sequence[str | Path] | None,
    selection: str | None,
    k: int | None,
    stage: str | None,
    update_bn: bool | None,
) -> SWARun:
    exp_dir = config.experiment_dir
    trained = _open_best(config)
    io.remove_stale_temporaries(exp_dir)  # what a killed run left
    best, tables = trained.model_file, trained.tables
    stage = stage or config.swa_stage()
    paths, how = _choose(config, checkpoints, selection or config.swa.selection, k or config.swa.k, stage)
    log.info(
        "averaging %d checkpoints: %s (epochNN counts from 0: epoch05 is metrics.csv's epoch 6)",
        len(paths),
        ", ".join(p.name for p in paths),
    )
    model = create_model(
        replace(config.model, pretrained=False, checkpoint=None), len(best.classes), config.task
    )
    model.load_state_dict(average_checkpoints(paths, _reference_loader(config, exp_dir, best.classes, model)))

    loaders = {s: make_loader(t, best.prep.transform(), config.data, train=False) for s, t in tables.items()}
    update = config.swa.update_bn if update_bn is None else update_bn
    bn_text = _batchnorm(config, model, stage, bool(checkpoints), tables["train"], loaders["train"], update)
    log.info(bn_text)
    module = eval_module(model.cpu(), config)
    swa_results = evaluate(module, config, loaders, ["valid", "test"]).results
    metrics: dict[str, Any] = {"stage": stage, "epoch": "swa", "swa_of": ", ".join(p.name for p in paths)}
    metrics.update({f"{s}/{name}": v for s, values in swa_results.items() for name, v in values.items()})
    out = exp_dir / MODEL_SWA
    record = model_file(module.model, config, best.classes, best.prep, metrics)
    # an earlier average is kept: moved aside once the new file is complete, never overwritten
    aside = io.replace_keeping(out, lambda p: torch.save(record, p))
    if aside is not None:
        log.warning("the earlier model.swa.pth was moved to %s", aside.name)

    results, models, best_outputs = _compared(config, exp_dir, module, loaders, swa_results)
    write_swa_report(exp_dir, config.experiment_name, how, paths, bn_text, best.metrics, results)
    write_results(exp_dir, config.task, models)
    thresholds = trained.thresholds()[0] if trained.thresholds_path is not None else None
    module.model.load_state_dict(load_weights(exp_dir / MODEL_BEST))  # the page is the best model's
    # the page's metrics table gains the SWA (and EMA) rows
    write_page(
        exp_dir, config, tables, best.classes, best_outputs, thresholds, model=(module.model, best.prep)
    )
    verdict = swa_verdict(results, config.monitor, config.resolved_monitor_mode())
    log.info(verdict)
    return SWARun(out, paths, how, bn_text, results, aside, verdict)


def _compared(
    config: Config, exp_dir: Path, module: Any, loaders: dict[str, Any], swa_results: Results
) -> tuple[Results, dict[str, Results], dict[str, Any]]:
    """The best and EMA models evaluated beside the average: results keyed "best/valid", "swa/test", ...;
    the same as model -> split -> metrics (results.json); and the best model's outputs (report.html)."""
    results: Results = {}
    best_outputs: dict[str, Any] = {}
    for name, path in {"best": exp_dir / MODEL_BEST, "ema": exp_dir / MODEL_EMA}.items():
        if path.is_file():
            module.model.load_state_dict(load_weights(path))
            evaluated = evaluate(module, config, loaders, ["valid", "test"])
            results.update({f"{name}/{s}": v for s, v in evaluated.results.items()})
            best_outputs = evaluated.outputs if name == "best" else best_outputs
        if name == "best":
            results.update({f"swa/{s}": v for s, v in swa_results.items()})
    models: dict[str, Results] = {}
    for key, values in results.items():  # "swa/valid" -> models["swa"]["valid"]
        name, split = key.split("/", 1)
        models.setdefault(name, {})[split] = values
    return results, models, best_outputs
