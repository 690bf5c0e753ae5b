"""The tasks by name: `get_task("multi_label")`. One module per task (`multi_label`, `single_label`,
`segmentation`), each a `Task` (`mlic.tasks.base`): pure behaviour — loss, activation, metrics, prior
head, report section, predictions table; reading labels is `mlic.data`'s job.

The registry names where each task lives and imports it the first time it is asked for, so that the
config layer (which asks for a task's default loss and monitor) loads no metrics or plotting library
when it is imported."""

from __future__ import annotations

import importlib

from mlic.tasks.base import Task
from mlic.utils.errors import ConfigError

# name -> (module, class, constructor arguments)
REGISTRY: dict[str, tuple[str, str, tuple]] = {
    "multi_label": ("mlic.tasks.multi_label", "MultiLabel", ()),
    "single_label": ("mlic.tasks.single_label", "SingleLabel", ()),
    "segmentation": ("mlic.tasks.segmentation", "Segmentation", (False,)),
    "multilabel_segmentation": ("mlic.tasks.segmentation", "Segmentation", (True,)),
}
TASK_NAMES = tuple(REGISTRY)
# every task's metric columns in one order that keeps each task's own: the tables show those a result has
ALL_COLUMNS = ("loss", "map", "auc", "f1_micro", "accuracy", "top5_accuracy", "f1_macro", "iou", "dice")

_built: dict[str, Task] = {}


def get_task(name: str | Task) -> Task:
    """The task named `name` (a `Task` is returned as it is), or one ConfigError sentence listing the tasks."""
    if isinstance(name, Task):
        return name
    if name not in REGISTRY:
        raise ConfigError(f"field 'task' must be one of {', '.join(map(repr, TASK_NAMES))}, got {name!r}")
    if name not in _built:
        module, cls, args = REGISTRY[name]
        _built[name] = getattr(importlib.import_module(module), cls)(*args)
    return _built[name]
