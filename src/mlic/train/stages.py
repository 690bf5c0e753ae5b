"""The stage loop: data and model are prepared (`mlic.train.prepare`), then each stage freezes what it
freezes, runs its range test when it asks for one (`mlic.train.range_tests`), and trains; the best model
is evaluated and the report written."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import CheckpointIO

from mlic.config.schema import Config, Stage
from mlic.data.loaders import build_loaders
from mlic.data.tables import LabelTable
from mlic.engine.lr_curve import RangeTest
from mlic.engine.runtime import (
    expected_warnings_silenced,
    trainer_kwargs,
    world_size,
)
from mlic.evaluate.calibrate import calibrate
from mlic.evaluate.evaluation import (
    Results,
    apply_thresholds,
    evaluate,
    per_class_rows,
)
from mlic.evaluate.report import write_lr_report, write_report
from mlic.evaluate.report_page import write_page
from mlic.experiment.checkpoints import thresholds_file
from mlic.experiment.files import CHECKPOINTS, MODEL_BEST, MODEL_LAST
from mlic.experiment.lock import experiment_lock
from mlic.experiment.results import write_results
from mlic.models.weights import read_state_dict
from mlic.tasks import get_task
from mlic.train.callbacks import (
    AtomicCheckpointIO,
    EMARecorder,
    EpochProgressBar,
    ExperimentRecorder,
    ProcessSeeds,
    StageJumpWatch,
)
from mlic.train.prepare import Checked, Prepared, check_inputs, prepare
from mlic.train.range_tests import stage_lr, suffixes_of, wants_range_test
from mlic.train.resume import mark_finished, resume_point, resume_stage
from mlic.utils.errors import ConfigError
from mlic.utils.progress import shows_progress
from mlic.utils.ranks import is_rank_zero

log = logging.getLogger("mlic")


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
        dirpath=exp_dir / CHECKPOINTS,
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
    if shows_progress(config.trainer) and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(EpochProgressBar())
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
    mark_finished(run_.exp_dir / CHECKPOINTS, stage.name)
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
    best_path = exp_dir / MODEL_BEST
    if not best_path.exists():  # no epoch had a finite monitored value
        log.warning("%s was never finite; reporting the last weights instead of the best", config.monitor)
        best_path = exp_dir / MODEL_LAST
    module = run_.module
    state, meta = read_state_dict(best_path, "model file")
    module.model.load_state_dict(state)
    module.tta = config.tta  # the final evaluation predicts as predict.py and the exports will
    evaluated = evaluate(module, config, loaders, ["valid", "test"])
    results, outputs = evaluated.results, evaluated.outputs
    if not is_rank_zero():  # every process evaluated its share; the first writes
        return TrainingRun(exp_dir, results, dict(meta.get("metrics", {})), None, range_tests)
    calibration_section = calibrate(exp_dir, config, run_.classes, outputs, results)  # before thresholds
    thresholds = apply_thresholds(exp_dir, config, run_.classes, outputs, results)
    classes_table = per_class_rows(config, run_.classes, run_.tables, outputs, thresholds)
    task_section = get_task(config.task).report_section(exp_dir, run_.classes, classes_table, outputs)
    task_section += calibration_section
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
    write_results(exp_dir, config.task, {"best": results})
    best_model = (module.model, run_.prep)
    write_page(
        exp_dir,
        config,
        run_.tables,
        run_.classes,
        outputs,
        thresholds,
        run_.notes,
        run_.environment,
        best_model,
    )
    tuned = thresholds_file(exp_dir) if thresholds is not None else None
    return TrainingRun(exp_dir, results, dict(meta.get("metrics", {})), tuned, range_tests)


def run(config: Config, resume: bool = False, tables: dict[str, LabelTable] | None = None) -> TrainingRun:
    """Train every stage of `config` and write the experiment folder; return what was measured.

    With `resume` an interrupted run continues in its own folder: finished stages are skipped and an
    unfinished one continues from its last checkpoint (weights, optimizer, scheduler, epoch). `tables`
    (split -> LabelTable) replace the splits the config's data names (the label audit's folds). A config
    with `lr_finder` set trains nothing: `run_lr_find` runs it (as `train.py` does).
    """
    if config.lr_finder is not None:
        raise ConfigError(
            "a range-test config (lr_finder=...) trains nothing: run it with run_lr_find(config), or "
            "train.py, which does"
        )
    checked = check_inputs(config, resume, tables)  # a bad input stops here: no lock file, no folder
    with experiment_lock(config.experiment_dir):  # one writer: a second run of it stops here
        return _train(config, resume, checked)


def _train(config: Config, resume: bool, checked: Checked) -> TrainingRun:
    run_ = prepare(config, resume=resume, checked=checked)
    config = run_.config
    loaders = build_loaders(config, run_.tables, run_.prep, processes=world_size(config))
    recorder = ExperimentRecorder(run_.exp_dir, config, run_.classes, run_.prep)
    stages = config.resolved_stages()
    first, ckpt = 0, None
    if resume:
        point = resume_point(config)
        first, ckpt = resume_stage(config, run_.module.model, point)
        recorder.restore(point.rows)
    suffixes = suffixes_of([s for s in stages if wants_range_test(s)])
    range_tests: dict[str, RangeTest] = {}
    started = time.time() - sum(float(r.get("time_s", 0)) for r in recorder.rows)  # epochs before a resume
    for stage in stages[first:]:
        continuing = ckpt is not None
        if continuing and not isinstance(stage.lr, (int, float)):
            stage = replace(stage, lr=None)  # its LRs come back with the optimizer state of the checkpoint
        elif wants_range_test(stage) and is_rank_zero():
            stage, range_tests[stage.name] = stage_lr(config, run_, stage, suffixes[stage.name])
        elif wants_range_test(stage):  # the first process tests; its LR reaches this one as training starts
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
