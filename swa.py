"""Average a trained experiment's checkpoints: `ROOT_PATH=/data/posters python swa.py configs/train_full.py`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mlic.utils.early import add_overrides, stop_if_unset

if TYPE_CHECKING:
    from mlic.train.swa import SWARun


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "config",
        help="the config that trained the experiment, or the experiment folder (swa.py then runs the "
        "folder's config.py, which is Python code: use folders you trust)",
    )
    add_overrides(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--top-k", type=int, metavar="K", help="average the K best checkpoints (by monitor)")
    which.add_argument("--last-k", type=int, metavar="K", help="average the checkpoints of the last K epochs")
    which.add_argument("--checkpoints", nargs="+", metavar="FILE", help="average exactly these files")
    parser.add_argument(
        "--stage", help="whose checkpoints to average (default: swa.stage, else the last stage)"
    )
    parser.add_argument(
        "--no-update-bn", action="store_true", help="keep the averaged BatchNorm statistics as they are"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return parser.parse_args(argv)


def print_swa(name: str, outcome: SWARun) -> None:
    from mlic.evaluate.report import format_table

    print(
        f"\n{name}: SWA of {len(outcome.averaged)} checkpoints ({', '.join(p.name for p in outcome.averaged)})"
    )
    print(outcome.bn_text)
    print(format_table(outcome.results))
    if outcome.verdict:
        print(f"\n{outcome.verdict[0].upper()}{outcome.verdict[1:]}.")
    print(f"\nwrote {outcome.path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_if_unset(args.config)  # ROOT_PATH missing: one sentence before the heavy imports below
    from mlic.config.loading import load_config
    from mlic.train.swa import run_swa
    from mlic.utils.cli import run_cli
    from mlic.utils.errors import ConfigError

    def _run() -> int:
        folder = Path(args.config) if Path(args.config).is_dir() else None
        path = folder / "config.py" if folder else Path(args.config)
        for name in ("top_k", "last_k"):
            value = getattr(args, name)
            if value is not None and value < 2:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 2, got {value}")
        config = load_config(path, args.overrides)
        if folder is not None:  # the folder given, wherever the saved config says the run was written
            config.output_dir, config.experiment_name = str(folder.resolve().parent), folder.resolve().name
        selection = "top" if args.top_k else "last" if args.last_k else None
        outcome = run_swa(
            config,
            checkpoints=args.checkpoints,
            selection=selection,
            k=args.top_k or args.last_k,
            stage=args.stage,
            update_bn=False if args.no_update_bn else None,
        )
        print_swa(config.experiment_name, outcome)
        return 0

    return run_cli(_run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
