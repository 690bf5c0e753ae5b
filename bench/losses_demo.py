"""Losses on the demo at the same budget: BCE, focal, label smoothing, asymmetric (and BCE with auto pos_weight).

Usage (from the repo root, after `make install`):
    .venv/bin/python bench/losses_demo.py [--data data/demo] [--losses bce focal smoothing asymmetric]

Each run is `configs/demo.py` unchanged (range test → head 2 epochs → range test → full 4 epochs, each
stage at the LR its range test suggests for that loss) with only `loss` replaced; the script prints one
Markdown row per loss from the run's report.md: test mAP, F1 macro at 0.5 and with per-class thresholds
tuned on valid.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

LOSSES = {
    "bce": "torch.nn.BCEWithLogitsLoss()",
    "bce_auto_pos_weight": "losses.BCEWithLogitsLoss(pos_weight='auto')",
    "focal": "losses.FocalLoss(alpha=0.25, gamma=2.0)",
    "smoothing": "losses.LabelSmoothingBCE(smoothing=0.1)",
    "asymmetric": "losses.AsymmetricLoss(gamma_pos=0.0, gamma_neg=4.0, clip=0.05)",
}


def test_row(report: str) -> dict[str, str]:
    lines = report.splitlines()
    header = next(line for line in lines if line.startswith("| split |"))
    row = next(line for line in lines if line.startswith("| test |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    return dict(zip(names, (c.strip() for c in row.strip("|").split("|"))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "mlic.demo", "--out", args.data], check=True)
    os.environ["ROOT_PATH"] = args.data

    import torch  # noqa: F401 - used by the loss expressions

    from mlic import load_config, losses  # noqa: F401
    from mlic.train.stages import run

    rows = []
    for name in args.losses:
        config = load_config("configs/demo.py")
        config = replace(config, experiment_name=f"demo_loss_{name}", loss=eval(LOSSES[name]))  # noqa: S307
        start = time.time()
        exp_dir = run(config).exp_dir
        seconds = time.time() - start
        test = test_row((Path(exp_dir) / "report.md").read_text())
        rows.append(
            f"| `{LOSSES[name]}` | {test['map']} | {test['f1_macro']} | {test.get('f1_macro_tuned', '—')} | "
            f"{test['f1_micro']} | {test.get('f1_micro_tuned', '—')} | {seconds:.0f} |"
        )
    print(
        "\n| loss | test mAP | test F1 macro @0.5 | test F1 macro tuned | test F1 micro @0.5 | "
        "test F1 micro tuned | seconds |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
