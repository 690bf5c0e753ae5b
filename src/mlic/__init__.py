"""mlic: multi-label image classification from plain-Python configs, on Lightning + timm.

`import mlic` loads nothing heavy; each name loads on first use: `from mlic import Config` the config
schema only (torch, no Lightning, pandas or plotting), so a config file imports fast; `mlic.load_config`
and `mlic.losses` the rest."""

import importlib
import importlib.abc
import importlib.util
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for readers and type checkers; at run time each name loads on first use, below
    from mlic.config.loading import load_config
    from mlic.config.schema import (
        SWA,
        Config,
        Data,
        LRFinder,
        Mixing,
        Model,
        Stage,
        Sweep,
        choice,
        env_path,
        intrange,
        loguniform,
        uniform,
    )
    from mlic.utils.errors import CheckpointError, ConfigError, DataError, MlicError

__all__ = [
    "Config",
    "Data",
    "Model",
    "Stage",
    "LRFinder",
    "SWA",
    "Mixing",
    "Sweep",
    "loguniform",
    "uniform",
    "intrange",
    "choice",
    "env_path",
    "load_config",
    "MlicError",
    "ConfigError",
    "DataError",
    "CheckpointError",
]
__version__ = "0.1.0"

# name -> module that defines it, imported on first use (PEP 562): `import mlic` itself loads nothing,
# so a command can check its arguments before torch loads (mlic.utils.early)
_SCHEMA = ("SWA", "Config", "Data", "LRFinder", "Mixing", "Model", "Stage", "Sweep", "choice", "env_path")
_LAZY = {
    **dict.fromkeys(_SCHEMA + ("intrange", "loguniform", "uniform"), "mlic.config.schema"),
    **dict.fromkeys(("MlicError", "ConfigError", "DataError", "CheckpointError"), "mlic.utils.errors"),
    "load_config": "mlic.config.loading",
    "losses": "mlic.losses",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'mlic' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if module.__name__ == f"mlic.{name}" else getattr(module, name)


# ---------------------------------------------------------------------------------------- moved modules
# The flat modules of earlier releases, now in their layers: an old import path (in a config, or in the
# config.py copy of an experiment trained before) still finds its module.
MOVED = {
    "augment": "data.augment",
    "cache": "data.cache",
    "callbacks": "train.callbacks",
    "checkpoints": "experiment.checkpoints",
    "cli": "utils.cli",
    "config_file": "config.loading",
    "demo_posters": "demo.posters",
    "environment": "utils.environment",
    "errors": "utils.errors",
    "evaluation": "evaluate.evaluation",
    "export": "deploy.export",
    "images": "data.images",
    "io": "utils.io",
    "labels": "data.labels",
    "markdown": "utils.markdown",
    "mixing": "data.mixing",
    "module": "engine.module",
    "optim": "engine.optim",
    "predict": "deploy.predict",
    "progress": "utils.progress",
    "resume": "train.resume",
    "runtime": "engine.runtime",
    "stages": "train.stages",
    "swa": "train.swa",
    "sweep": "train.sweep",
}


class _MovedModule(importlib.abc.Loader):
    """Loads an old module name as the module it moved to (the same module object)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.spec = None

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.spec = module.__spec__  # importlib sets the old name's spec on it next; it gets its own back
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self.spec


class _MovedModules(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        old = name.removeprefix("mlic.")
        if not name.startswith("mlic.") or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, _MovedModule(f"mlic.{MOVED[old]}"))


sys.meta_path.append(_MovedModules())
