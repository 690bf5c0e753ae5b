"""Train the stages of a config: `ROOT_PATH=/data/posters python train.py configs/train_full.py`."""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", help="a Python file that defines `config = Config(...)`")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set data.batch_size=32 (repeatable)",
    )
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mlic.cli import run_cli

    def _run() -> int:
        from mlic.config import load_config
        from mlic.errors import ConfigError
        from mlic.stages import run, run_evaluate

        if sum([args.lr_find, args.validate, args.test, args.resume]) > 1:
            raise ConfigError("use one of --lr-find, --resume, --validate and --test at a time")
        if args.weights and not (args.validate or args.test):
            raise ConfigError("--weights goes with --validate or --test")
        config = load_config(args.config, args.overrides)
        if args.validate or args.test:
            run_evaluate(config, "test" if args.test else "valid", args.weights)
        else:
            run(config, lr_find=args.lr_find, resume=args.resume)
        return 0

    return run_cli(_run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
