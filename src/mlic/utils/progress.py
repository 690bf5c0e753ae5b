"""Progress bars for the long steps a user waits on outside training (image checks, the decoded-image
cache, BatchNorm re-estimation, predictions over a folder), shown as Lightning shows training's: on a
terminal, and never in a log file or a pipe."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], total: int | None, desc: str, show: bool = True) -> tqdm:
    """`iterable` with a bar named `desc`; shown when `show` and stderr is a terminal."""
    return tqdm(
        iterable, total=total, desc=desc, disable=None if show else True, leave=False, dynamic_ncols=True
    )


def shows_progress(trainer: dict) -> bool:
    """Whether a config's `trainer` arguments leave progress bars on (Lightning's `enable_progress_bar`)."""
    return trainer.get("enable_progress_bar", True) is not False
