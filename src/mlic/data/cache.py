"""The decoded-image cache (`Data(cache=...)`): every image of the splits decoded and resized to the
model's input size once, before training, and kept in memory as one uint8 array per split. Loader
workers are forked from the process that holds it and only read it, so they share its pages instead
of copying them, and no epoch decodes a file again."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mlic.config.schema import Data
from mlic.data.images import Preprocessing, resize
from mlic.data.loaders import decode_checked, unusable_images
from mlic.data.tables import LabelTable
from mlic.utils.errors import ConfigError
from mlic.utils.progress import progress

log = logging.getLogger("mlic")

GB = 1024**3


def size_text(n: float) -> str:
    """A number of bytes for a person: GB from a tenth of one, MB below."""
    return f"{n / GB:.2f} GB" if n >= GB / 10 else f"{n / 1024**2:.1f} MB"


def memory_budget(cfg: Data, processes: int = 1) -> float:
    """Bytes the cache may take in this process: `data.cache_memory` GB, or by default a quarter of the
    machine's memory shared among the `processes` of a multi-process job on this machine."""
    if cfg.cache_memory is not None:
        return float(cfg.cache_memory) * GB
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return total / 4 / max(processes, 1)


def cache_bytes(tables: dict[str, LabelTable], img_size: tuple[int, int]) -> int:
    """What caching every image of `tables` at `img_size` (height, width) takes, in bytes."""
    return sum(len(t) for t in tables.values()) * img_size[0] * img_size[1] * 3


def _fill(
    table: LabelTable, prep: Preprocessing, pool: ThreadPoolExecutor, show_progress: bool = True
) -> list[tuple[str, str]]:
    """Decode and resize every image of `table` into `table.images`; return the ones that failed."""
    h, w = prep.img_size
    images = np.empty((len(table), h, w, 3), dtype=np.uint8)
    problems = []

    def one(i: int) -> None:
        image, why = decode_checked(str(table.paths[i]))
        if image is None:
            problems.append((str(table.paths[i]), why))
        else:
            images[i] = resize(image, prep.img_size, prep.interpolation)

    name = table.source.stem
    list(
        progress(pool.map(one, range(len(table)), chunksize=32), len(table), f"caching {name}", show_progress)
    )
    table.images = images
    return sorted(problems)


def cache_images(
    cfg: Data,
    tables: dict[str, LabelTable],
    prep: Preprocessing,
    processes: int = 1,
    show_progress: bool = True,
) -> bool:
    """Fill the cache of every split when `cfg.cache` asks for it and the images fit the budget (shared
    among the job's `processes` on this machine); return whether they are cached. Every image is decoded in full here, so a corrupt one stops the run with
    one sentence before anything is written (as `data.verify_images` does)."""
    if cfg.cache is False:
        return False
    if any(t.masks is not None for t in tables.values()):  # segmentation augments image and mask together
        if cfg.cache is True:
            log.info("data.cache: segmentation reads images and masks from disk every epoch (no cache)")
        return False
    count = sum(len(t) for t in tables.values())
    need, budget = cache_bytes(tables, prep.img_size), memory_budget(cfg, processes)
    if need > budget:
        where = f"the {count} images at {prep.img_size[0]}x{prep.img_size[1]}"
        if cfg.cache is True:
            raise ConfigError(
                f"field 'data.cache': {where} take {size_text(need)}, over the cache's budget of "
                f"{size_text(budget)}; raise data.cache_memory (GB), use a smaller data.img_size, or set "
                f"data.cache=False to read the images from disk every epoch"
            )
        log.info(
            "data.cache: %s take %s, over the budget of %s (data.cache_memory); images are read "
            "from disk every epoch",
            where,
            size_text(need),
            size_text(budget),
        )
        return False
    start = time.time()
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = [p for table in tables.values() for p in _fill(table, prep, pool, show_progress)]
    if problems:
        for table in tables.values():
            table.images = None
        raise unusable_images(
            problems, count, "data.cache=False and data.verify_images=False skip this check"
        )
    log.info(
        "cached %d decoded images (%s) in %.1f s (data.cache=False reads them from disk instead)",
        count,
        size_text(need),
        time.time() - start,
    )
    return True
