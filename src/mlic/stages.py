"""The stage loop: data and model are prepared, then each stage freezes what it freezes, runs its range
test when it asks for one, and trains; the best model is evaluated and the report written."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import CheckpointIO

from mlic.cache import cache_images
from mlic.callbacks import AtomicCheckpointIO, EMARecorder, ExperimentRecorder, ProcessSeeds, StageJumpWatch
from mlic.checkpoints import read_state_dict, thresholds_file
from mlic.config import Config, LRFinder, Stage
from mlic.data import (
    LabelTable,
    build_loaders,
    make_loader,
    read_splits,
    split_warnings,
    verify_images,
    worker_count,
)
from mlic.environment import environment, environment_block
from mlic.errors import ConfigError
from mlic.evaluation import Results, apply_thresholds, constant_loss, evaluate, per_class_rows, setup_loss
from mlic.images import Preprocessing
from mlic.lr_finder import (
    FLAT_ADVICE,
    RangeTest,
    above_lowest_raw,
    describe,
    describe_flat,
    range_test,
)
from mlic.models import (
    check_input_size,
    create_model,
    frozen_parameter_names,
    head_parameter_names,
    load_checkpoint,
    preprocessing,
    prior_init_head,
)
from mlic.module import ClassifierModule
from mlic.progress import shows_progress
from mlic.report import save_lr_curve, write_lr_report, write_report
from mlic.resume import mark_finished, open_folder, resume_point, resume_stage
from mlic.runtime import (
    autocast_dtype,
    check_trainer,
    device_label,
    expected_warnings_silenced,
    is_rank_zero,
    local_processes,
    trainer_kwargs,
    training_device,
    world_size,
)
from mlic.tasks import get_task

log = logging.getLogger("mlic")


# ------------------------------------------------------------------------------------------ preparing


@dataclass
class Prepared:
    """Everything a run needs, built and checked before anything is written or trained."""

    tables: dict[str, LabelTable]
    classes: list[str]
    prep: Preprocessing
    module: ClassifierModule
    exp_dir: Path
    notes: list[str]  # data warnings, for the log and report.md
    environment: dict[str, str] = field(default_factory=dict)  # versions, devices, commit, command line


def _init_head(config: Config, model: torch.nn.Module, train: LabelTable, new_head: bool) -> float:
    """Set a new head's bias to the class priors (`model.prior_init`); return the prior loss: the config's
    loss when every image gets the prior logits, the loss a first batch is compared with."""
    pos_weight = getattr(config.loss, "pos_weight", None)
    weight = pos_weight.numpy() if isinstance(pos_weight, torch.Tensor) else None
    logits = get_task(config.task).prior_logits(train.targets, weight)
    prior_loss = constant_loss(config.loss, train.targets, logits)
    if not (config.model.prior_init and new_head):
        return prior_loss
    if prior_init_head(model, logits):
        log.info(
            "the new head starts at the class frequencies of the train split (prior loss %.4f); "
            "Model(prior_init=False) turns this off",
            prior_loss,
        )
    else:
        log.warning(
            "model.prior_init: %s has no classifier bias with one value per class; its head keeps "
            "timm's initialisation",
            config.model.name,
        )
    return prior_loss


def _decode_images(config: Config, tables: dict[str, LabelTable], prep: Preprocessing) -> None:
    """Every image decoded once before anything is written: into the cache (`data.cache`), or, when it
    is not cached, checked and let go (`data.verify_images`); a broken one stops the run either way."""
    show = shows_progress(config.trainer)
    if (
        cache_images(config.data, tables, prep, local_processes(config), show)
        or not config.data.verify_images
    ):
        return
    count, seconds = verify_images(tables, show)
    if seconds >= 1.0:  # said where it is worth knowing: large data sets
        log.info("decoded all %d images in %.1f s (data.verify_images=False skips this)", count, seconds)


def prepare(config: Config, resume: bool = False) -> Prepared:
    """Read and check the data, build the model (weights, checkpoint), then open the experiment folder
    (a new one, or with `resume` the interrupted one, kept as it is)."""
    check_trainer(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    if config.data.num_workers == "auto":  # resolved once, for every loader of the run
        config.data.num_workers = worker_count(config.data, local_processes(config))
    tables = read_splits(config.data, config.seed, config.task)
    classes = tables["train"].classes
    model = create_model(config.model, len(classes), config.task)
    head_loaded = False
    if config.model.checkpoint:
        head_loaded = load_checkpoint(model, Path(config.model.checkpoint), config.model.name, classes)
    prep = preprocessing(model, config.data.img_size)
    check_input_size(model, prep.img_size)
    setup_loss(config.loss, tables["train"], classes, config.task)
    prior_loss = _init_head(config, model, tables["train"], new_head=not head_loaded and not resume)
    head_parameter_names(model, prep.img_size)
    for stage in config.resolved_stages():  # a wrong pattern stops now, not after the stages before it
        frozen_parameter_names(model, stage.freeze_backbone, stage.freeze, f"stages.{stage.name}.freeze")
    _decode_images(config, tables, prep)
    notes = split_warnings(tables)
    for note in notes:
        log.warning(note)
    exp_dir = open_folder(config, classes, resume)
    module = ClassifierModule.from_config(model, config)
    module.prior_loss = prior_loss
    facts = environment(getattr(config, "source_path", None))
    if config.log_environment:  # once everything is checked: a bad input stays one sentence
        log.info(environment_block(facts))
    log.info("device: %s, precision %s", device_label(config), trainer_kwargs(config)["precision"])
    return Prepared(tables, classes, prep, module, exp_dir, notes, facts)


# ------------------------------------------------------------------------------------- the range test


def _finder_settings(stage: Stage, default: LRFinder | None) -> LRFinder:
    if isinstance(stage.lr, LRFinder):
        return stage.lr
    return default or LRFinder()


def _wants_range_test(stage: Stage) -> bool:
    return stage.lr == "find" or isinstance(stage.lr, LRFinder)


def _suffixes(stages: list[Stage]) -> dict[str, str]:
    """`lr_finder.csv` when one stage is tested, `lr_finder_<stage>.csv` for each when several are."""
    if len(stages) == 1:
        return {stages[0].name: ""}
    return {s.name: f"_{s.name}" for s in stages}


def stage_range_test(
    config: Config, run_: Prepared, stage: Stage, settings: LRFinder, suffix: str
) -> RangeTest:
    """Run the LR range test for `stage` on the current weights and save its curve (in the first process
    only: with several, the others take its suggestion when training starts, `ClassifierModule.configure_optimizers`)."""
    module = run_.module
    module.set_stage(replace(stage, lr=None) if not isinstance(stage.lr, (int, float)) else stage)
    optimizer = module.build_optimizer()
    # a copy: an albumentations pipeline keeps its own generator, which training must find untouched
    train_tf = run_.prep.transform(copy.deepcopy(config.data.augmentations))
    loader = make_loader(run_.tables["train"], train_tf, config.data, train=True, seed=config.seed)
    if config.trainer.get("enable_progress_bar") is False:
        settings = replace(settings, progress=False)
    device = training_device(config)
    module.to(device)
    precision = autocast_dtype(trainer_kwargs(config)["precision"])
    result = range_test(
        module, optimizer, loader, module.loss_fn, settings, device, precision, label=f"stage {stage.name}"
    )
    module.to("cpu")
    save_lr_curve(
        result,
        run_.exp_dir / f"lr_finder{suffix}.csv",
        run_.exp_dir / f"lr_finder{suffix}.png",
        title=f"{config.experiment_name}: stage {stage.name}",
    )
    log.info(describe(result, stage.name))
    if result.stopped_early:
        log.warning(
            "the range test of stage %s stopped after %d of %d steps: the loss diverged at LR %.2e",
            stage.name,
            len(result.lrs),
            settings.num_steps,
            result.lrs[-1],
        )
    return result


@dataclass
class RangeTestRun:
    """What `run_lr_find` did: the experiment folder and each stage's range test."""

    exp_dir: Path
    range_tests: dict[str, RangeTest]


def run_lr_find(config: Config) -> RangeTestRun:
    """Only the LR range test, for every stage of the config on its starting weights; no training."""
    results: dict[str, RangeTest] = {}
    if not is_rank_zero():  # under torchrun or SLURM: the first process runs the tests and writes them
        return RangeTestRun(config.experiment_dir, results)
    run_ = prepare(config)
    stages = config.resolved_stages()
    suffixes = _suffixes(stages)
    for stage in stages:
        settings = _finder_settings(stage, config.lr_finder)
        results[stage.name] = stage_range_test(config, run_, stage, settings, suffixes[stage.name])
    write_lr_report(run_.exp_dir, config, results, suffixes)
    return RangeTestRun(run_.exp_dir, results)


def _stage_lr(config: Config, run_: Prepared, stage: Stage, suffix: str) -> tuple[Stage, RangeTest]:
    """The stage with the LR its range test suggests (the optimizer's own LR when there is none)."""
    result = stage_range_test(config, run_, stage, _finder_settings(stage, None), suffix)
    lr = result.suggestion
    if lr is None:
        lr = run_.module.build_optimizer().defaults["lr"]
        flat = result.signal is not None and not result.signal.clear
        why = describe_flat(result.signal) if flat else "the curve is too short for its rule to read"
        log.warning(
            "no LR suggestion for stage %s: %s; it trains with the optimizer's lr %.2e. %s",
            stage.name,
            why,
            lr,
            FLAT_ADVICE[0].upper() + FLAT_ADVICE[1:],
        )
    elif (factor := above_lowest_raw(result)) is not None:
        log.warning(
            "stage %s takes the suggested LR %.2e, %.1fx above the LR of the lowest raw loss (%.2e): the "
            "smoothed curve is lowest where single batches were not; if the stage's valid loss jumps, "
            "set its lr at or below that",
            stage.name,
            lr,
            factor,
            lr / factor,
        )
    return replace(stage, lr=lr), result


# ------------------------------------------------------------------------------------------- training


def _plugins(config: Config) -> list[Any]:
    """The config's Trainer plugins, with atomic checkpoint writes unless it brings its own CheckpointIO."""
    plugins = config.trainer.get("plugins") or []
    plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


def make_trainer(
    config: Config, stage: Stage, exp_dir: Path, recorder: ExperimentRecorder, notes: list[str] | None = None
) -> L.Trainer:
    """The Trainer of one stage: its checkpoints (top-k by monitor, `<stage>-last.ckpt` for --resume),
    the recorder, LR logging, the EMA when SWA asks for it, and the config's own callbacks."""
    swa_stage = stage.name == config.swa_stage()
    # with swa.last_k the SWA stage keeps its last k epochs ("epoch" is a metric ModelCheckpoint knows)
    keep_last = swa_stage and config.swa.selection == "last"
    checkpoint = ModelCheckpoint(
        dirpath=exp_dir / "checkpoints",
        filename=f"{stage.name}-epoch{{epoch:02d}}",
        monitor="epoch" if keep_last else config.monitor,
        mode="max" if keep_last else config.resolved_monitor_mode(),
        save_top_k=config.kept_checkpoints(stage.name),
        save_last=True,  # <stage>-last.ckpt: where --resume continues from
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    checkpoint.CHECKPOINT_NAME_LAST = f"{stage.name}-last"
    callbacks = [
        recorder,
        checkpoint,
        LearningRateMonitor(logging_interval="epoch"),
        ProcessSeeds(config.seed),
        StageJumpWatch(recorder, notes if notes is not None else []),
    ]
    if swa_stage and config.swa.ema_decay is not None:
        callbacks.append(EMARecorder(recorder, config.swa.ema_decay))
    callbacks += config.callbacks
    kwargs = trainer_kwargs(config)
    kwargs["plugins"] = _plugins(config)
    return L.Trainer(
        max_epochs=stage.epochs,
        callbacks=callbacks,
        logger=CSVLogger(save_dir=str(exp_dir), name="logs", version=stage.name),
        default_root_dir=str(exp_dir),
        **kwargs,
    )


def _fit(
    config: Config,
    run_: Prepared,
    stage: Stage,
    recorder: ExperimentRecorder,
    loaders: dict,
    ckpt: Path | None,
) -> bool:
    """Train one stage (from `ckpt` when it continues an interrupted one); False if it was interrupted."""
    log.info(
        "stage %s: %d epoch(s), backbone %s, lr %s",
        stage.name,
        stage.epochs,
        "frozen" if stage.freeze_backbone else f"frozen by {stage.freeze!r}" if stage.freeze else "trainable",
        f"{stage.lr:.2e}" if stage.lr is not None else "from the optimizer",
    )
    run_.module.set_stage(stage)
    recorder.stage = stage
    trainer = make_trainer(config, stage, run_.exp_dir, recorder, run_.notes)
    with expected_warnings_silenced():
        trainer.fit(run_.module, loaders["train"], loaders["valid"], ckpt_path=str(ckpt) if ckpt else None)
    if is_rank_zero():
        recorder.save_last(run_.module)
    if trainer.interrupted:
        log.warning("training interrupted in stage %s; what was written is kept", stage.name)
        return False
    mark_finished(run_.exp_dir / "checkpoints", stage.name)
    return True


@dataclass
class TrainingRun:
    """What `run` did: the experiment folder, the best model's metrics on each split, and where it came from."""

    exp_dir: Path
    results: Results  # split -> metric -> value, of the best model
    best: dict[str, Any]  # the model file's record: stage, epoch and that epoch's metrics
    thresholds_path: Path | None  # per-class thresholds tuned on valid (None without a valid split)
    range_tests: dict[str, RangeTest]


def _final(
    config: Config,
    run_: Prepared,
    recorder: ExperimentRecorder,
    loaders: dict,
    train_time: float,
    range_tests: dict[str, RangeTest],
) -> TrainingRun:
    """Evaluate the best model on valid and test, tune thresholds, write the report."""
    exp_dir = run_.exp_dir
    best_path = exp_dir / "model.best.pth"
    if not best_path.exists():  # no epoch had a finite monitored value
        log.warning("%s was never finite; reporting the last weights instead of the best", config.monitor)
        best_path = exp_dir / "model.last.pth"
    module = run_.module
    state, meta = read_state_dict(best_path, "model file")
    module.model.load_state_dict(state)
    results = evaluate(module, config, loaders, ["valid", "test"])
    outputs = {s: module.last_outputs[s] for s in results if s in module.last_outputs}
    if not is_rank_zero():  # every process evaluated its share; the first writes
        return TrainingRun(exp_dir, results, dict(meta.get("metrics", {})), None, range_tests)
    thresholds = apply_thresholds(exp_dir, config, run_.classes, outputs, results)
    classes_table = per_class_rows(config, run_.classes, run_.tables, outputs, thresholds)
    task_section = get_task(config.task).report_section(exp_dir, run_.classes, classes_table, outputs)
    write_report(
        exp_dir,
        config,
        run_.classes,
        recorder.rows,
        recorder.best_row,
        results,
        train_time,
        task_section,
        run_.notes,
        run_.environment,
    )
    tuned = thresholds_file(exp_dir) if thresholds is not None else None
    return TrainingRun(exp_dir, results, dict(meta.get("metrics", {})), tuned, range_tests)


def run(config: Config, lr_find: bool = False, resume: bool = False) -> TrainingRun | RangeTestRun:
    """Train every stage of `config` and write the experiment folder; return what was measured.

    With `config.lr_finder` set (or `lr_find=True`, the `--lr-find` flag) only the LR range test runs.
    With `resume` an interrupted run continues in its own folder: finished stages are skipped and an
    unfinished one continues from its last checkpoint (weights, optimizer, scheduler, epoch).
    """
    if lr_find or config.lr_finder is not None:
        if resume:
            raise ConfigError(
                "a range-test config (lr_finder=...) trains nothing, so there is nothing to resume"
            )
        return run_lr_find(config)
    run_ = prepare(config, resume=resume)
    loaders = build_loaders(config, run_.tables, run_.prep, processes=world_size(config))
    recorder = ExperimentRecorder(run_.exp_dir, config, run_.classes, run_.prep)
    stages = config.resolved_stages()
    first, ckpt = 0, None
    if resume:
        point = resume_point(config)
        first, ckpt = resume_stage(config, run_.module.model, point)
        recorder.restore(point.rows)
    suffixes = _suffixes([s for s in stages if _wants_range_test(s)])
    range_tests: dict[str, RangeTest] = {}
    started = time.time() - sum(float(r.get("time_s", 0)) for r in recorder.rows)  # epochs before a resume
    for stage in stages[first:]:
        continuing = ckpt is not None
        if continuing and not isinstance(stage.lr, (int, float)):
            stage = replace(stage, lr=None)  # its LRs come back with the optimizer state of the checkpoint
        elif _wants_range_test(stage) and is_rank_zero():
            stage, range_tests[stage.name] = _stage_lr(config, run_, stage, suffixes[stage.name])
        elif _wants_range_test(stage):  # the first process tests; its LR reaches this one as training starts
            stage = replace(stage, lr=None)
        finished = _fit(config, run_, stage, recorder, loaders, ckpt)
        ckpt = None
        if not finished:
            break
    outcome = _final(config, run_, recorder, loaders, time.time() - started, range_tests)
    if range_tests and is_rank_zero():
        write_lr_report(run_.exp_dir, config, range_tests, suffixes, append=True)
    if is_rank_zero():
        recorder.finalize_loggers()
    return outcome
