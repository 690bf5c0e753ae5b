"""The image Dataset (images with targets or masks), the image check, the iteration sampler, seeding and the loaders."""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from mlic.config.schema import Config, Data
from mlic.data.images import ImageTransform, Preprocessing, read_rgb
from mlic.data.masks import Masks
from mlic.data.tables import LabelTable, ids_name_files, shared_images
from mlic.utils.errors import DataError
from mlic.utils.progress import progress
from mlic.utils.ranks import process_index

log = logging.getLogger("mlic")


def decode_checked(path: str) -> tuple[np.ndarray | None, str | None]:
    """The image at `path` as an HxWx3 uint8 RGB array (what `read_rgb` gives), or None and why it cannot
    be trained on: decoded in full, as training will."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return None, e.strerror or str(e)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None, "not an image, or a corrupted one"
    if data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < 0:  # OpenCV decodes the part that is there
        return None, "a truncated JPEG (it has no end marker)"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), None


def _image_problem(path: str) -> str | None:
    return decode_checked(path)[1]


def unusable_images(problems: list[tuple[str, str]], count: int, skip_hint: str) -> DataError:
    """The one sentence for the images of a run that cannot be decoded (`problems`: path, why)."""
    path, why = problems[0]
    return DataError(
        f"{len(problems)} of {count} images cannot be used (first: {path}: {why}); replace them or "
        f"remove their rows ({skip_hint})"
    )


def verify_images(tables: dict[str, LabelTable], show_progress: bool = True) -> tuple[int, float]:
    """Decode every image of every split once, in parallel threads, so a corrupt or truncated one stops
    the run with one sentence before anything is written; return (images checked, seconds)."""
    start = time.time()
    paths = sorted({str(p) for table in tables.values() for p in table.paths})
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        checked = progress(
            pool.map(_image_problem, paths, chunksize=32), len(paths), "checking images", show_progress
        )
        problems = [(p, why) for p, why in zip(paths, checked) if why]
    if problems:
        hint = "data.verify_images=False skips this check, and training stops at them instead"
        raise unusable_images(problems, len(paths), hint)
    return len(paths), time.time() - start


def split_warnings(tables: dict[str, LabelTable]) -> list[str]:
    """What is legal but probably wrong about the splits: an image in two of them (`shared_images`), a
    class without positives."""
    notes = []
    names = list(tables)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = shared_images(tables[a], tables[b])
            if not shared:
                continue
            what = "id(s) are" if ids_name_files(tables[a], tables[b]) else "image(s) are"
            id_a, id_b = shared[0]
            first = id_a if id_a == id_b else f"{id_a} in {a}, identical to {id_b} in {b}"
            notes.append(
                f"{len(shared)} {what} in both {a} and {b} (first: {first}): the {b} metrics score images "
                f"the model may have trained on"
            )
    for name, table in tables.items():
        empty = [c for c, n in zip(table.classes, table.targets.sum(0)) if n == 0]
        if empty:
            notes.append(
                f"{len(empty)} class(es) have no positives in {name} ({', '.join(empty[:5])}): their AP there "
                f"is undefined and left out of mAP"
            )
    return notes


class ImageDataset(Dataset):
    """Images and targets of one split; items are (CHW float tensor, float target vector)."""

    def __init__(
        self,
        paths: np.ndarray,
        targets: np.ndarray,
        transform: ImageTransform,
        images: np.ndarray | None = None,
        max_pixels: int | None = Data.max_image_pixels,
    ) -> None:
        self.paths = np.asarray(paths)
        self.targets = torch.tensor(np.array(targets, dtype=np.float32))
        self.transform = transform
        self.images = (
            images  # the decoded-image cache of this split (`mlic.data.cache`), or None: read each time
        )
        self.process = 0  # which process of a multi-process job reads it (`runtime.process_index`)
        self.max_pixels = max_pixels  # `data.max_image_pixels`: a larger image is refused before decoding

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.images is not None:  # a copy: augmentations may edit the image in place
            return self.transform(self.images[index].copy()), self.targets[index]
        return self.transform(read_rgb(str(self.paths[index]), self.max_pixels)), self.targets[index]


class MaskDataset(ImageDataset):
    """Images and their masks (segmentation); items are (CHW float tensor, C×H×W float mask), both
    through the same resizing and augmentations (`ImageTransform.pair`)."""

    def __init__(
        self,
        paths: np.ndarray,
        masks: Masks,
        transform: ImageTransform,
        max_pixels: int | None = Data.max_image_pixels,
    ) -> None:
        empty = np.zeros((len(paths), 0), dtype=np.float32)
        super().__init__(paths, empty, transform, max_pixels=max_pixels)
        self.masks = masks

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_rgb(str(self.paths[index]), self.max_pixels)
        x, mask = self.transform.pair(image, self.masks[index])
        return x, self.masks.target(mask)


def dataset_of(
    table: LabelTable, transform: ImageTransform, max_pixels: int | None = Data.max_image_pixels
) -> ImageDataset:
    """The Dataset of a split: its images with their targets, or with their masks; an image with more
    than `max_pixels` pixels (`data.max_image_pixels`) is refused from its header."""
    if table.masks is not None:
        return MaskDataset(table.paths, table.masks, transform, max_pixels)
    return ImageDataset(table.paths, table.targets, transform, table.images, max_pixels)


# ---------------------------------------------------------------------------------- sampling, workers


class IterationSampler(Sampler[int]):
    """Yields exactly `num_iterations * batch_size` indices per epoch, cycling through fresh shuffles.

    The position in the current shuffle carries over to the next epoch, so every item is seen
    equally often; the shuffles come from torch's global generator, so a fixed seed reproduces them.
    """

    def __init__(self, num_items: int, num_iterations: int, batch_size: int) -> None:
        self.num_items = num_items
        self.num_iterations = num_iterations
        self.batch_size = batch_size
        self._pending: list[int] = []

    def __len__(self) -> int:
        return self.num_iterations * self.batch_size

    def __iter__(self) -> Iterator[int]:
        seed = int(torch.empty((), dtype=torch.int64).random_().item())
        generator = torch.Generator().manual_seed(seed)
        out: list[int] = []
        while len(out) < len(self):
            if not self._pending:
                self._pending = torch.randperm(self.num_items, generator=generator).tolist()
            take = min(len(self) - len(out), len(self._pending))
            out.extend(self._pending[:take])
            self._pending = self._pending[take:]
        return iter(out)


def process_seed(seed: int, process: int) -> int:
    """`seed` in the first process; in another, a seed drawn from (seed, process), so that no two
    processes of a multi-process job augment alike."""
    if process == 0:
        return seed
    return int(np.random.SeedSequence([seed, process]).generate_state(1)[0])


def seed_process(seed: int) -> None:
    """Seed Python's and numpy's generators (what augmentations draw from without loader workers) apart
    in each process of the job. Torch's stays the same in all: the samplers' shuffles must agree."""
    process = process_index()
    if process == 0:  # the first process keeps the generators it has
        return
    seed = process_seed(seed, process)
    random.seed(seed)
    np.random.seed(seed)


def worker_init_fn(worker_id: int) -> None:
    """Seed each worker from torch's per-worker, per-epoch seed (apart in each process of the job), and
    turn OpenCV's threads off."""
    cv2.setNumThreads(0)
    info = get_worker_info()
    process = getattr(info.dataset, "process", 0) if info is not None else 0
    seed = process_seed(torch.initial_seed() % 2**32, process)
    random.seed(seed)
    np.random.seed(seed)
    if info is not None and isinstance(info.dataset, ImageDataset):
        info.dataset.transform.reseed(seed)


def make_loader(
    table: LabelTable, transform: ImageTransform, cfg: Data, train: bool, seed: int = 0, processes: int = 1
) -> DataLoader:
    """The DataLoader of a split: shuffled (or exactly `num_iteration_on_epoch` batches) for training.

    With `processes` > 1 (DDP, which hands each process its share of the sampler's indices) the
    iteration sampler yields that many times more, so every process still takes
    `num_iteration_on_epoch` batches: the job makes that many optimizer steps per epoch."""
    dataset = dataset_of(table, transform, cfg.max_image_pixels)
    if train:
        dataset.process = process_index()  # for the workers' seeds
        transform.reseed(process_seed(seed, dataset.process))  # used as is when num_workers=0; workers reseed
    sampler = None
    shuffle = train
    workers = worker_count(cfg)
    if train and cfg.num_iteration_on_epoch:
        sampler = IterationSampler(len(dataset), cfg.num_iteration_on_epoch, cfg.batch_size * processes)
        shuffle = False
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        worker_init_fn=worker_init_fn,
        drop_last=bool(train and sampler is None and len(dataset) > cfg.batch_size),
        pin_memory=torch.cuda.is_available(),
        # workers live across epochs: no start-up each epoch (their generators go on, so epochs differ)
        persistent_workers=workers > 0,
        multiprocessing_context=_worker_start(workers, table.images),
    )


def worker_count(cfg: Data, processes: int = 1) -> int:
    """`data.num_workers`, with "auto" resolved: the CPUs this process may use (shared among the
    `processes` of a multi-process job on this machine) less one for the training loop, at most 8."""
    if cfg.num_workers != "auto":
        return int(cfg.num_workers)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(8, cpus // max(processes, 1) - 1))


def _worker_start(num_workers: int, images: np.ndarray | None) -> str | None:
    """'fork' where workers read a cache: forked, they share its memory (pickled, as 'spawn' and
    'forkserver' send the dataset, each would get a copy). None: the platform's default."""
    if num_workers > 0 and images is not None and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return None


def build_loaders(
    config: Config, tables: dict[str, LabelTable], prep: Preprocessing, processes: int = 1
) -> dict[str, DataLoader]:
    """Train loader (augmented, shuffled; see `make_loader` for `processes`) and plain loaders for valid/test."""
    train_tf = prep.transform(config.data.augmentations)
    # one image through the train transform now, so a broken augmentation stops before training
    dataset_of(tables["train"], copy.deepcopy(train_tf), config.data.max_image_pixels)[0]
    train = make_loader(
        tables["train"], train_tf, config.data, train=True, seed=config.seed, processes=processes
    )
    loaders = {"train": train}
    for split in ("valid", "test"):
        if split in tables:
            loaders[split] = make_loader(tables[split], prep.transform(), config.data, train=False)
    return loaders
