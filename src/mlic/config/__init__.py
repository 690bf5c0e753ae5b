"""The config layer: the schema (`Config`, `Data`, `Stage`, ...), `--set` overrides, validation and loading
a config file. The schema's names are exported here (`from mlic.config import Config, apply_override`);
validation and loading are `mlic.config.validation` and `mlic.config.loading`."""

from mlic.config.schema import (
    SWA,
    Config,
    Data,
    LRFinder,
    Mixing,
    Model,
    SearchRange,
    Stage,
    Sweep,
    apply_override,
    choice,
    env_path,
    intrange,
    loguniform,
    monitor_names,
    uniform,
)

__all__ = [
    "SWA",
    "Config",
    "Data",
    "LRFinder",
    "Mixing",
    "Model",
    "SearchRange",
    "Stage",
    "Sweep",
    "apply_override",
    "choice",
    "env_path",
    "intrange",
    "loguniform",
    "monitor_names",
    "uniform",
]
