"""The LR range test inside a run: a stage's test on the current weights (`stage_range_test`), the LR a
stage takes from it (`stage_lr`), and the range-test-only run (`run_lr_find`, `--lr-find`)."""

from __future__ import annotations

import copy
import gc
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from mlic.config.schema import Config, LRFinder, Stage
from mlic.data.loaders import make_loader
from mlic.engine.lr_curve import FLAT_ADVICE, RangeTest, above_lowest_raw, describe, describe_flat
from mlic.engine.runtime import (
    autocast_dtype,
    trainer_kwargs,
    training_device,
)
from mlic.evaluate.report import save_lr_curve, write_lr_report
from mlic.experiment.lock import experiment_lock
from mlic.train.lr_finder import range_test
from mlic.train.prepare import Prepared, check_inputs, prepare
from mlic.utils.ranks import is_rank_zero

log = logging.getLogger("mlic")


def finder_settings(stage: Stage, default: LRFinder | None) -> LRFinder:
    if isinstance(stage.lr, LRFinder):
        return stage.lr
    return default or LRFinder()


def wants_range_test(stage: Stage) -> bool:
    return stage.lr == "find" or isinstance(stage.lr, LRFinder)


def suffixes_of(stages: list[Stage]) -> dict[str, str]:
    """`lr_finder.csv` when one stage is tested, `lr_finder_<stage>.csv` for each when several are."""
    if len(stages) == 1:
        return {stages[0].name: ""}
    return {s.name: f"_{s.name}" for s in stages}


def _swept(stage: Stage) -> str:
    """The x-axis of a stage's range-test plot: which LR the sweep moves."""
    if stage.freeze_backbone:
        return "learning rate (the head's; the backbone is frozen)"
    if stage.backbone_lr_scale != 1:
        return f"learning rate (the head's; the backbone's is {stage.backbone_lr_scale:g}×)"
    return "learning rate (the whole network)"


def stage_range_test(
    config: Config, run_: Prepared, stage: Stage, settings: LRFinder, suffix: str
) -> RangeTest:
    """Run the LR range test for `stage` on the current weights and save its curve (in the first process
    only: with several, the others take its suggestion when training starts, `ClassifierModule.configure_optimizers`)."""
    module = run_.module
    module.set_stage(replace(stage, lr=None) if not isinstance(stage.lr, (int, float)) else stage)
    optimizer = module.build_optimizer()
    # a copy: an albumentations pipeline keeps its own generator, which training must find untouched
    train_tf = run_.prep.transform(copy.deepcopy(config.data.augmentations))
    loader = make_loader(run_.tables["train"], train_tf, config.data, train=True, seed=config.seed)
    if config.trainer.get("enable_progress_bar") is False:
        settings = replace(settings, progress=False)
    device = training_device(config)
    module.to(device)
    precision = autocast_dtype(trainer_kwargs(config)["precision"])
    result = range_test(
        module, optimizer, loader, module.loss_fn, settings, device, precision, label=f"stage {stage.name}"
    )
    # its persistent workers stopped now, here: left to a later collection, the loader could be collected
    # inside a worker forked by training and print torch's "AssertionError: can only test a child process"
    del loader
    gc.collect()
    module.to("cpu")
    save_lr_curve(
        result,
        run_.exp_dir / f"lr_finder{suffix}.csv",
        run_.exp_dir / f"lr_finder{suffix}.png",
        title=f"{config.experiment_name}: stage {stage.name}",
        xlabel=_swept(stage),
    )
    log.info(describe(result, stage.name))
    if result.stopped_early:  # how a range test is meant to end: information, not a warning
        log.info(
            "the range test of stage %s stopped after %d of %d steps, where the loss diverged (LR %.2e)",
            stage.name,
            len(result.lrs),
            settings.num_steps,
            result.lrs[-1],
        )
    return result


@dataclass
class RangeTestRun:
    """What `run_lr_find` did: the experiment folder and each stage's range test."""

    exp_dir: Path
    range_tests: dict[str, RangeTest]


def run_lr_find(config: Config) -> RangeTestRun:
    """Only the LR range test, for every stage of the config on its starting weights; no training."""
    results: dict[str, RangeTest] = {}
    if not is_rank_zero():  # under torchrun or SLURM: the first process runs the tests and writes them
        return RangeTestRun(config.experiment_dir, results)
    checked = check_inputs(config)  # a bad input stops here: no lock file, no folder
    with experiment_lock(config.experiment_dir):  # one writer: a second run of it stops here
        run_ = prepare(config, checked=checked)
        config = run_.config
        stages = config.resolved_stages()
        suffixes = suffixes_of(stages)
        for stage in stages:
            settings = finder_settings(stage, config.lr_finder)
            results[stage.name] = stage_range_test(config, run_, stage, settings, suffixes[stage.name])
        write_lr_report(run_.exp_dir, config, results, suffixes)
    return RangeTestRun(run_.exp_dir, results)


def stage_lr(config: Config, run_: Prepared, stage: Stage, suffix: str) -> tuple[Stage, RangeTest]:
    """The stage with the LR its range test suggests (the optimizer's own LR when there is none)."""
    result = stage_range_test(config, run_, stage, finder_settings(stage, None), suffix)
    lr = result.suggestion
    if lr is None:
        lr = run_.module.build_optimizer().defaults["lr"]
        flat = result.signal is not None and not result.signal.clear
        why = describe_flat(result.signal) if flat else "the curve is too short for its rule to read"
        log.warning(
            "no LR suggestion for stage %s: %s; it trains with the optimizer's lr %.2e. %s",
            stage.name,
            why,
            lr,
            FLAT_ADVICE[0].upper() + FLAT_ADVICE[1:],
        )
    elif (factor := above_lowest_raw(result)) is not None:
        log.warning(
            "stage %s takes the suggested LR %.2e, %.1fx above the LR of the lowest raw loss (%.2e): the "
            "smoothed curve is lowest where single batches were not; if the stage's valid loss jumps, "
            "set its lr at or below that",
            stage.name,
            lr,
            factor,
            lr / factor,
        )
    return replace(stage, lr=lr), result
