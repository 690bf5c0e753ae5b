"""The experiment folder across runs: opening a new one (an earlier run is set aside, never overwritten),
what an interrupted run left (`checkpoints/<stage>-last.ckpt`, `checkpoints/stages.json`, metrics.csv),
and how `--resume` continues it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mlic.config.loading import config_copy_text
from mlic.config.schema import Config
from mlic.experiment.checkpoints import read_info, read_metrics
from mlic.experiment.files import CHECKPOINTS, CONFIG_COPY, METRICS, REPORT, STAGES
from mlic.experiment.lock import unwritable
from mlic.models.weights import load_weights
from mlic.utils import io
from mlic.utils.errors import CheckpointError, ConfigError, DataError
from mlic.utils.ranks import is_rank_zero

log = logging.getLogger("mlic")


# ---------------------------------------------------------------------------------- the folder itself


def open_folder(config: Config, classes: list[str], resume: bool) -> Path:
    """The experiment folder: with `resume` the interrupted run's, checked and kept as it is; else a new
    one holding `config.py` and `classes.json` (an earlier run of the same name is renamed aside)."""
    exp_dir = config.experiment_dir
    if not is_rank_zero():  # the first process opens the folder; the others only write through it
        return exp_dir
    if resume:
        _check_resumable(exp_dir, classes)
        for folder in (exp_dir, exp_dir / CHECKPOINTS):  # what the interrupted run was writing
            io.remove_stale_temporaries(folder)
        return exp_dir
    if exp_dir.is_dir() and any(exp_dir.iterdir()):
        log.warning("an earlier run of %s was moved to %s", exp_dir.name, io.set_aside(exp_dir))
    try:
        exp_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise unwritable(exp_dir, e) from None
    io.write_text(exp_dir / CONFIG_COPY, config_copy_text(config))
    io.write_json(exp_dir / "classes.json", classes)
    return exp_dir


def _check_resumable(exp_dir: Path, classes: list[str]) -> None:
    if not (exp_dir / METRICS).is_file():
        raise CheckpointError(
            f"nothing to resume in {exp_dir}: it has no metrics.csv (no epoch finished); train without --resume"
        )
    saved = json.loads((exp_dir / "classes.json").read_text(encoding="utf-8"))
    if saved != classes:
        raise DataError(
            f"{exp_dir / 'classes.json'} lists other classes than the data now has; "
            f"resume with the data the run started with, or train without --resume"
        )


# ------------------------------------------------------------------------------------- stages.json


def finished_stages(folder: Path) -> list[str]:
    """The stages `checkpoints/stages.json` records as run to their end."""
    path = folder / STAGES
    if not path.is_file():
        return []
    try:
        finished = json.loads(path.read_text(encoding="utf-8")).get("finished", [])
    except (ValueError, UnicodeDecodeError, AttributeError):
        finished = None
    if not (isinstance(finished, list) and all(isinstance(s, str) for s in finished)):
        raise CheckpointError(
            f'{path} is damaged (it should read {{"finished": ["<stage>", ...]}}); fix it, or delete it to '
            f"let --resume go by the checkpoints alone"
        )
    return finished


def mark_finished(folder: Path, stage: str) -> None:
    """Record that `stage` ran to its end (all epochs, or stopped early on purpose), for --resume."""
    if not is_rank_zero():
        return
    finished = [s for s in finished_stages(folder) if s != stage] + [stage]
    io.write_json(folder / STAGES, {"finished": finished})


# ----------------------------------------------------------------------------------- where it stands


@dataclass
class ResumePoint:
    """Where an interrupted run stands: how far each stage got, and the rows of those epochs."""

    rows: list[dict[str, Any]]
    done: dict[str, int]  # epochs of each stage saved in the checkpoint it continues from
    complete: set[str]  # stages that ran to their end (all epochs, or an early stop)
    sources: dict[str, Path]  # the checkpoint of each stage that has one: `<stage>-last.ckpt` or a fallback


def stage_checkpoint(folder: Path, stage: str) -> tuple[Path, int] | None:
    """The checkpoint a stage continues from and the epochs it holds: `<stage>-last.ckpt`, or, when that
    is missing or damaged, the latest readable `<stage>-epochNN.ckpt` (said in a warning); None when the
    stage has no checkpoint at all."""
    last = folder / f"{stage}-last.ckpt"
    damage = None
    if last.is_file():
        try:
            return last, int(read_info(last).epoch or 0)
        except CheckpointError as e:
            damage = e
    epochs = []
    for path in folder.glob(f"{stage}-epoch*.ckpt"):
        try:
            info = read_info(path)
        except CheckpointError:
            continue  # a damaged epoch checkpoint is passed over like a missing one
        if info.stage in (stage, None) and info.epoch:
            epochs.append((int(info.epoch), path))
    if not epochs:
        if damage is not None:
            raise damage
        return None
    epoch, path = max(epochs)
    log.warning(
        "stage %s: %s is %s; continuing from %s, the latest complete epoch checkpoint of the stage "
        "(epoch %d); the epochs after it run again",
        stage,
        last.name,
        "damaged" if damage else "missing",
        path.name,
        epoch,
    )
    return path, epoch


def resume_point(config: Config) -> ResumePoint:
    """How far each stage got, by its checkpoint (saved after every epoch's row of metrics.csv, so a row
    without a checkpoint belongs to an epoch that will run again and is dropped)."""
    folder = config.experiment_dir / CHECKPOINTS
    stages = config.resolved_stages()
    finished = set(finished_stages(folder))
    done, sources = {}, {}
    for stage in stages:
        found = stage_checkpoint(folder, stage.name)
        done[stage.name] = found[1] if found else 0
        if found:
            sources[stage.name] = found[0]
    complete = {s.name for s in stages if s.name in finished}
    for i, stage in enumerate(stages):  # a stage before one that trained has finished, early or not
        if any(done[later.name] > 0 for later in stages[i + 1 :]):
            complete.add(stage.name)
    rows = read_metrics(config.experiment_dir / METRICS)
    rows = [row for row in rows if row["epoch"] <= done.get(row["stage"], 0)]
    return ResumePoint(rows, done, complete, sources)


def resume_stage(config: Config, model: nn.Module, point: ResumePoint) -> tuple[int, Path | None]:
    """Index of the first unfinished stage and the checkpoint it continues from (None: it starts afresh
    from the weights the previous stage ended with, loaded into `model` here)."""
    stages = config.resolved_stages()
    for i, stage in enumerate(stages):
        done = point.done.get(stage.name, 0)
        if done >= stage.epochs or stage.name in point.complete:
            continue
        if done > 0:
            source = point.sources[stage.name]
            log.info("resuming stage %s after epoch %d of %d from %s", stage.name, done, stage.epochs, source)
            return i, source
        if i > 0:
            previous = point.sources.get(stages[i - 1].name)
            if previous is None:
                raise CheckpointError(
                    f"cannot resume at stage {stage.name}: stage {stages[i - 1].name} left no checkpoint in "
                    f"{config.experiment_dir / CHECKPOINTS}"
                )
            model.load_state_dict(load_weights(previous))
            log.info("resuming at the start of stage %s with the weights of %s", stage.name, previous)
        return i, None
    if (config.experiment_dir / REPORT).is_file():
        raise ConfigError(
            f"every stage of {config.experiment_name} has finished and its report is written "
            f"({config.experiment_dir / 'report.md'}): nothing to resume"
        )
    log.info("every stage has finished; resuming with the final evaluation and report")
    return len(stages), None
