"""A sweep's search space (`Sweep`, `loguniform`, `uniform`, `intrange`, `choice`), part of the config
schema (`mlic.config.schema` re-exports them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class SearchRange:
    """One dimension of a sweep's search space (built by `loguniform`, `uniform`, `intrange`, `choice`)."""

    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int | None = None
    choices: tuple = ()

    def suggest(self, trial: Any, name: str) -> Any:
        """The value an Optuna trial draws for `name`."""
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=self.step or 1, log=self.log)
        return trial.suggest_categorical(name, list(self.choices))

    def examples(self) -> tuple:
        """The values at its edges (every option of a choice), to check that the field takes each of
        them before any trial runs."""
        if self.kind == "categorical":
            return self.choices
        cast = int if self.kind == "int" else float
        return (cast(self.low), cast(self.high))


def loguniform(low: float, high: float) -> SearchRange:
    """A float between `low` and `high`, drawn evenly on a log scale (learning rates, weight decay)."""
    return SearchRange("float", low, high, log=True)


def uniform(low: float, high: float) -> SearchRange:
    """A float between `low` and `high`."""
    return SearchRange("float", low, high)


def intrange(low: int, high: int, step: int = 1) -> SearchRange:
    """An int from `low` to `high` (both included), in steps of `step`."""
    return SearchRange("int", low, high, step=step)


def choice(options: list) -> SearchRange:
    """One of `options` (numbers, strings, booleans, None)."""
    return SearchRange("categorical", choices=tuple(options))


@dataclass
class Sweep:
    """A hyperparameter search run by `python sweep.py CONFIG` on Optuna: `n_trials` trials, each a
    normal experiment of the config with the dotted fields of `space` drawn by the sampler, scored by
    `metric` of its best model (a `valid/...` column), in `direction` (None: "minimize" for a loss,
    "maximize" otherwise). `pruner` "median" stops trials whose epochs fall below the median of the
    earlier trials' at the same epoch; None lets every trial run to its end."""

    space: dict[str, SearchRange]
    n_trials: int = 20
    metric: str | None = None  # None: the config's monitor
    direction: Literal["maximize", "minimize"] | None = None
    pruner: Literal["median"] | None = "median"
    timeout: float | None = None  # seconds, after which no new trial starts

    def resolved_direction(self, metric: str) -> str:
        if self.direction:
            return self.direction
        return "minimize" if metric.endswith("loss") else "maximize"


__all__ = ["SearchRange", "Sweep", "choice", "intrange", "loguniform", "uniform"]
