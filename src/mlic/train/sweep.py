"""A hyperparameter sweep from the config (`Config(sweep=Sweep(...))`), run on Optuna by `sweep.py`.

Every trial is a normal experiment of the config, with the fields of `sweep.space` set to the values
the sampler draws, in `experiments/<name>_sweep/<name>_trialNNN/`. The study lives in
`experiments/<name>_sweep/optuna.db` (Optuna's RDB storage on SQLite), so a sweep that was killed
continues where it stopped when run again: trials left running by the kill are marked failed, and
trials run until `n_trials` have finished (completed or pruned). After the trials, `sweep.csv` (every
trial, its values and score) and `compare.md`/`compare.csv` (`mlic.evaluate.compare` over the trial folders)
are written beside them.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L

from mlic.config.schema import Config, apply_override
from mlic.evaluate.compare import compare, markdown
from mlic.train.prepare import check_inputs
from mlic.train.stages import run
from mlic.utils import io
from mlic.utils.errors import ConfigError, MlicError

log = logging.getLogger("mlic")


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise MlicError(
            'sweep.py needs Optuna: install it with `.venv/bin/pip install -e ".[sweep]"`'
        ) from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial: mlic says why, once
    return optuna


class TrialPruning(L.Callback):
    """Reports the sweep's metric to the Optuna trial after every epoch, numbered across the
    config's stages (Optuna's own Lightning callback numbers by the epoch within one Trainer, and mlic
    runs one Trainer per stage), and stops a trial the pruner calls unpromising."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric, self.reported = trial, metric, 0

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # after mlic's recorder (config callbacks come after it): a pruned trial's last epoch is in metrics.csv
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            return
        self.reported += 1
        self.trial.report(float(value), step=self.reported)
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"pruned after epoch {self.reported} ({self.metric} {float(value):.4f})")


def trial_config(config: Config, values: dict[str, Any], number: int, folder: Path) -> Config:
    """The config of trial `number`: `values` set on its dotted fields, in its own experiment folder;
    the assignments are kept as overrides, so the trial's config.py copy reproduces it."""
    trial = copy.deepcopy(config)
    trial.sweep = None
    assignments = [f"{key}={value!r}" for key, value in values.items()]
    assignments += [
        f"experiment_name={config.experiment_name}_trial{number:03d}",
        f"output_dir={str(folder)!r}",
    ]
    for assignment in assignments:
        apply_override(trial, assignment)
    if config.source is not None:
        trial.source = replace(config.source, overrides=(*config.source.overrides, *assignments))
    return trial


@dataclass
class SweepRun:
    """What `run_sweep` did: its folder, the study, the best trial's number, values and score."""

    folder: Path
    study: Any
    best_number: int | None
    best_values: dict[str, Any]
    best_value: float | None


def _fail_interrupted(study: Any, storage: Any) -> int:
    """Mark the trials a killed sweep left running as failed; return how many (through the storage's
    public API: a trial's id in the storage comes from its study and number)."""
    optuna = _optuna()
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
    return len(stale)


def _open_study(config: Config, folder: Path) -> tuple[Any, Any]:
    """The sweep's Optuna study and its storage, in `folder/optuna.db` (continued when it exists)."""
    optuna, sweep = _optuna(), config.sweep
    folder.mkdir(parents=True, exist_ok=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if sweep.pruner == "median" else None
    storage = optuna.storages.RDBStorage(f"sqlite:///{(folder / 'optuna.db').resolve()}")
    return storage, optuna.create_study(
        study_name=config.experiment_name,
        storage=storage,
        load_if_exists=True,
        direction=sweep.resolved_direction(sweep.metric or config.monitor),
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=pruner or optuna.pruners.NopPruner(),
    )


def _write_tables(study: Any, folder: Path, target: str) -> None:
    """`sweep.csv` (a row per trial) and `compare.md`/`compare.csv` over the trial folders."""
    trials = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration", "user_attrs"))
    io.write_with(folder / "sweep.csv", lambda p: trials.to_csv(p, index=False))
    folders = sorted(p for p in folder.iterdir() if p.is_dir())
    try:
        table, _ = compare(folders, target)
        text = markdown(table)
        io.write_text(folder / "compare.md", text + "\n")
        io.write_with(folder / "compare.csv", lambda p: table.to_csv(p, index=False))
    except MlicError:
        pass  # no trial finished training (all pruned before a best model): nothing to compare


def run_sweep(config: Config, n_trials: int | None = None) -> SweepRun:
    """Run the config's sweep (continuing an earlier one in the same folder) and write its tables."""
    sweep = config.sweep
    if sweep is None:
        raise ConfigError(
            "the config has no `sweep`: add sweep=Sweep(space={'optimizer.lr': loguniform(1e-5, 1e-2)}) to it"
        )
    folder = Path(config.output_dir) / f"{config.experiment_name}_sweep"
    # the data, the weights files, the checkpoint and every stage's freezing, checked once: a bad input
    # is one sentence here, not a failed trial with a traceback in optuna.db
    log.info("sweep: checking the data and the model before the first trial")
    check_inputs(trial_config(config, {}, 0, folder))
    storage, study = _open_study(config, folder)
    failed = _fail_interrupted(study, storage)
    if failed:
        log.warning("sweep: %d trial(s) of an earlier, interrupted sweep were marked failed", failed)
    wanted = n_trials or sweep.n_trials
    optuna = _optuna()
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    target = sweep.metric or config.monitor
    split, metric = target.split("/", 1)

    def objective(trial: Any) -> float:
        values = {key: space.suggest(trial, key) for key, space in sweep.space.items()}
        config_t = trial_config(config, values, trial.number, folder)
        config_t.callbacks = [*config_t.callbacks, TrialPruning(trial, target)]
        log.info("sweep: trial %d of %d: %s", trial.number, wanted, values)
        trial.set_user_attr("experiment", config_t.experiment_name)  # before it runs: a pruned one has it too
        outcome = run(config_t)
        value = outcome.results.get(split, {}).get(metric)
        if value is None or not math.isfinite(value):
            raise MlicError(f"trial {trial.number} has no finite {target}")
        return float(value)

    if done < wanted:
        log.info("sweep: %d of %d trial(s) finished before; running the rest in %s", done, wanted, folder)
        study.optimize(
            objective,
            callbacks=[optuna.study.MaxTrialsCallback(wanted, states=finished)],
            timeout=sweep.timeout,
            catch=(),
        )
    _write_tables(study, folder, target)
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        return SweepRun(folder, study, None, {}, None)
    best = study.best_trial
    return SweepRun(folder, study, best.number, dict(best.params), best.value)


__all__ = ["run_sweep", "trial_config", "TrialPruning", "SweepRun"]
