"""Run the hyperparameter sweep a config defines: `ROOT_PATH=/data/posters python sweep.py configs/sweep_lr.py`.

Each trial is a normal experiment in `experiments/<name>_sweep/`; run the command again to continue a
sweep that was stopped (see docs/sweep.md).
"""

from __future__ import annotations

import argparse
import sys

from mlic.utils.early import add_overrides, stop_if_unset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a Python file that defines `config = Config(..., sweep=Sweep(...))`")
    add_overrides(parser, "a config field for every trial")
    parser.add_argument(
        "--n-trials", type=int, help="finished trials to reach (default: the config's sweep.n_trials)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_if_unset(args.config)  # ROOT_PATH missing: one sentence before the heavy imports below
    from mlic.config.loading import load_config
    from mlic.train.sweep import run_sweep
    from mlic.utils.cli import run_cli

    def _run() -> int:

        outcome = run_sweep(load_config(args.config, args.overrides), args.n_trials)
        states = outcome.study.trials_dataframe(attrs=("state",))["state"].value_counts().to_dict()
        print(
            f"\nsweep folder: {outcome.folder} ({', '.join(f'{n} {s.lower()}' for s, n in states.items())})"
        )
        if outcome.best_number is None:
            print("no trial completed")
            return 0
        print(
            f"best trial: {outcome.best_number}, {outcome.study.direction.name.lower()}d value {outcome.best_value:.4f}"
        )
        for key, value in outcome.best_values.items():
            print(f"  --set {key}={value!r}")
        print(f"table of the trials: {outcome.folder / 'compare.md'}")
        return 0

    return run_cli(_run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
