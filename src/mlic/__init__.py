"""mlic: multi-label image classification from plain-Python configs, on Lightning + timm."""

from mlic.config import (
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
from mlic.config_file import load_config
from mlic.errors import CheckpointError, ConfigError, DataError, MlicError

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
