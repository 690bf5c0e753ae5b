"""Preparing a run: the data read and checked, the model built (weights, checkpoint, prior head), every
image decoded once, the experiment folder opened — all before anything is trained."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch

from mlic.config.schema import Config
from mlic.data.cache import cache_images
from mlic.data.images import Preprocessing
from mlic.data.loaders import split_warnings, verify_images, worker_count
from mlic.data.tables import LabelTable, read_splits
from mlic.engine.module import ClassifierModule
from mlic.engine.runtime import (
    check_trainer,
    device_label,
    local_processes,
    trainer_kwargs,
)
from mlic.evaluate.evaluation import (
    constant_loss,
    setup_loss,
)
from mlic.models.build import (
    check_input_size,
    create_model,
    frozen_parameter_names,
    head_parameter_names,
    load_checkpoint,
    preprocessing,
    prior_init_head,
)
from mlic.tasks import get_task
from mlic.train.resume import open_folder
from mlic.utils.environment import environment, environment_block
from mlic.utils.progress import shows_progress

log = logging.getLogger("mlic")


@dataclass
class Prepared:
    """Everything a run needs, built and checked before anything is written or trained."""

    config: Config  # the user's config with what `prepare` resolved (data.num_workers="auto" as a number)
    tables: dict[str, LabelTable]
    classes: list[str]
    prep: Preprocessing
    module: ClassifierModule
    exp_dir: Path
    notes: list[str]  # data warnings, for the log and report.md
    environment: dict[str, str] = field(default_factory=dict)  # versions, devices, commit, command line


def _init_head(config: Config, model: torch.nn.Module, train: LabelTable, new_head: bool) -> float:
    """Set a new head's bias to the class priors (`model.prior_init`); return the prior loss: the config's
    loss when every image gets the prior logits, the loss a first batch is compared with."""
    pos_weight = getattr(config.loss, "pos_weight", None)
    weight = pos_weight.numpy() if isinstance(pos_weight, torch.Tensor) else None
    logits = get_task(config.task).prior_logits(train.targets, weight)
    prior_loss = constant_loss(config.loss, train.targets, logits)
    if not (config.model.prior_init and new_head):
        return prior_loss
    if prior_init_head(model, logits):
        log.info(
            "the new head starts at the class frequencies of the train split (prior loss %.4f); "
            "Model(prior_init=False) turns this off",
            prior_loss,
        )
    else:
        log.warning(
            "model.prior_init: %s has no classifier bias with one value per class; its head keeps "
            "timm's initialisation",
            config.model.name,
        )
    return prior_loss


def _decode_images(config: Config, tables: dict[str, LabelTable], prep: Preprocessing) -> None:
    """Every image decoded once before anything is written: into the cache (`data.cache`), or, when it
    is not cached, checked and let go (`data.verify_images`); a broken one stops the run either way."""
    show = shows_progress(config.trainer)
    if (
        cache_images(config.data, tables, prep, local_processes(config), show)
        or not config.data.verify_images
    ):
        return
    count, seconds = verify_images(tables, show)
    if seconds >= 1.0:  # said where it is worth knowing: large data sets
        log.info("decoded all %d images in %.1f s (data.verify_images=False skips this)", count, seconds)


@dataclass
class Checked:
    """The inputs of a run, read and checked: nothing written yet."""

    config: Config
    tables: dict[str, LabelTable]
    classes: list[str]
    prep: Preprocessing
    model: torch.nn.Module
    prior_loss: float


def check_inputs(
    config: Config, resume: bool = False, tables: dict[str, LabelTable] | None = None
) -> Checked:
    """Read and check the data (or take `tables`, read already: the label audit's folds), build the model
    (weights, checkpoint, prior head) and every stage's freezing, and decode every image once: each bad
    input stops here, before anything is written."""
    check_trainer(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    config = resolved(config)
    tables = tables or read_splits(config.data, config.seed, config.task)
    classes = tables["train"].classes
    model = create_model(config.model, len(classes), config.task)
    head_loaded = False
    if config.model.checkpoint:
        head_loaded = load_checkpoint(model, Path(config.model.checkpoint), config.model.name, classes)
    prep = preprocessing(model, config.data.img_size)
    check_input_size(model, prep.img_size)
    setup_loss(config.loss, tables["train"], classes, config.task)
    prior_loss = _init_head(config, model, tables["train"], new_head=not head_loaded and not resume)
    head_parameter_names(model, prep.img_size)
    for stage in config.resolved_stages():  # a wrong pattern stops now, not after the stages before it
        frozen_parameter_names(model, stage.freeze_backbone, stage.freeze, f"stages.{stage.name}.freeze")
    _decode_images(config, tables, prep)
    return Checked(config, tables, classes, prep, model, prior_loss)


def prepare(config: Config, resume: bool = False, checked: Checked | None = None) -> Prepared:
    """Check the run's inputs (`check_inputs`, unless `checked` holds what it returned), then open the
    experiment folder (a new one, or with `resume` the interrupted one, kept as it is)."""
    checked = checked or check_inputs(config, resume)
    config, tables, prep = checked.config, checked.tables, checked.prep
    notes = split_warnings(tables)
    for note in notes:
        log.warning(note)
    exp_dir = open_folder(config, checked.classes, resume)
    module = ClassifierModule.from_config(checked.model, config)
    module.prior_loss = checked.prior_loss
    # one input of the run's size: Lightning's model summary then counts real FLOPs and shows in/out sizes
    module.example_input_array = torch.zeros(1, 3, *prep.img_size)
    facts = environment(config.source.path if config.source else None)
    if config.log_environment:  # once everything is checked: a bad input stays one sentence
        log.info(environment_block(facts))
    log.info("device: %s, precision %s", device_label(config), trainer_kwargs(config)["precision"])
    return Prepared(config, tables, checked.classes, prep, module, exp_dir, notes, facts)


def resolved(config: Config) -> Config:
    """A copy of `config` with `data.num_workers="auto"` resolved once, for every loader of the run; the
    user's config is left as it was."""
    if config.data.num_workers != "auto":
        return config
    out, out.data = copy.copy(config), copy.copy(config.data)
    out.data.num_workers = worker_count(config.data, local_processes(config))
    return out
