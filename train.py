"""Train the stages of a config: `ROOT_PATH=/data/posters python train.py configs/train_full.py`."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from mlic.utils.early import add_overrides, stop_if_unset

if TYPE_CHECKING:
    from mlic.config.schema import Config
    from mlic.evaluate.evaluation import Evaluation
    from mlic.train.range_tests import RangeTestRun
    from mlic.train.stages import TrainingRun


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", help="a Python file that defines `config = Config(...)`")
    add_overrides(parser)
    parser.add_argument(
        "--lr-find",
        action="store_true",
        help="run only the LR range test, for every stage of the config (no training)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in its own folder: finished stages are skipped, an unfinished one "
        "continues from its last checkpoint",
    )
    parser.add_argument(
        "--validate",
        action="store_true",
        help="train nothing: evaluate a model file of the experiment on the valid split and print the metrics",
    )
    parser.add_argument("--test", action="store_true", help="the same on the test split")
    parser.add_argument(
        "--weights",
        help="with --validate/--test: the model file (in the experiment folder, or a path); default model.best.pth",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return parser.parse_args(argv)


def print_range_tests(outcome: RangeTestRun) -> None:
    from mlic.engine.lr_curve import describe

    print()
    for name, result in outcome.range_tests.items():
        print(describe(result, name))
    print(f"\nexperiment folder: {outcome.exp_dir}")


def print_training(config: Config, outcome: TrainingRun) -> None:
    from mlic.evaluate.report import format_table

    best = outcome.best
    print(
        f"\n{config.experiment_name}: best model ({config.monitor}) from stage {best.get('stage')}, "
        f"epoch {best.get('epoch')}"
    )
    print(format_table(outcome.results))
    if outcome.thresholds_path is not None:
        print(
            f"(*_tuned: F1 with the per-class thresholds tuned on valid, saved in {outcome.thresholds_path})"
        )
    print(f"\nexperiment folder: {outcome.exp_dir}")


def print_evaluation(config: Config, outcome: Evaluation) -> None:
    from mlic.evaluate.report import format_table

    print(f"\n{config.experiment_name}: {outcome.path} on {outcome.split} ({outcome.num_images} images)")
    print(format_table(outcome.results))
    if outcome.thresholds_path is not None:
        print(f"(*_tuned: F1 with the per-class thresholds of {outcome.thresholds_path})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_if_unset(args.config)  # ROOT_PATH missing: one sentence before the heavy imports below
    from mlic.config.loading import load_config
    from mlic.engine.runtime import world_size
    from mlic.evaluate.evaluation import evaluate_split
    from mlic.evaluate.report_page import refresh
    from mlic.train.range_tests import run_lr_find
    from mlic.train.stages import run
    from mlic.utils.cli import run_cli
    from mlic.utils.errors import ConfigError
    from mlic.utils.ranks import is_rank_zero

    def _run() -> int:
        if sum([args.lr_find, args.validate, args.test, args.resume]) > 1:
            raise ConfigError("use one of --lr-find, --resume, --validate and --test at a time")
        if args.weights and not (args.validate or args.test):
            raise ConfigError("--weights goes with --validate or --test")
        config = load_config(args.config, args.overrides)
        if args.validate or args.test:
            outcome = evaluate_split(config, "test" if args.test else "valid", args.weights)
            if is_rank_zero():  # with several processes, each evaluated its share; the first prints
                print_evaluation(config, outcome)
            if args.weights is None and world_size(config) == 1:  # the best model's page, evaluated again
                refresh(config.experiment_dir, config)
            return 0
        if args.lr_find or config.lr_finder is not None:  # a range-test config, or --lr-find: no training
            if args.resume:
                raise ConfigError(
                    "a range-test config (lr_finder=...) trains nothing, so there is nothing to resume"
                )
            tested = run_lr_find(config)
            if is_rank_zero():
                print_range_tests(tested)
            return 0
        trained = run(config, resume=args.resume)
        if is_rank_zero():
            print_training(config, trained)
        return 0

    return run_cli(_run, args.debug, every_process=True)


if __name__ == "__main__":
    sys.exit(main())
