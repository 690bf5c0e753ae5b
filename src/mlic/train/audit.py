"""`python -m mlic.audit experiments/<name>`: which train and valid labels the model disagrees with.

Confident learning (`mlic.metrics.label_issues`, cleanlab) needs probabilities from models that did not
see the rows. For valid that is the experiment's own model. For train the audit trains `folds` models
(k-fold, stratified on the labels), each on the other folds with the experiment's config, its valid
split choosing the best epoch, and predicts the fold it left out. Each finished fold is kept
(`audit/fold-<i>.csv`), an interrupted one resumes from its last epoch, so running the audit again
trains only what is missing. `--epochs` shortens every stage of the fold runs. `--folds 0` uses the
experiment's own model for train too: free, and measured better after a short training, worse after
one long enough to fit the wrong labels (it warns then; docs/audit.md).

It writes `label_audit.csv` (one row per suspicious label, the likeliest wrong first), a section of
`report.md`, and, when the experiment has a `report.html`, its label-audit section with thumbnails.
"""

from __future__ import annotations

import argparse
import copy
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mlic.config.loading import load_config
from mlic.config.schema import Config
from mlic.data.loaders import make_loader
from mlic.data.stratify import stratified_folds
from mlic.data.tables import LabelTable, read_splits
from mlic.evaluate.evaluation import eval_module, evaluate
from mlic.evaluate.report import replace_section
from mlic.evaluate.report_page import refresh
from mlic.experiment.checkpoints import load_model_file, resolve_model_file
from mlic.experiment.files import (
    AUDIT,
    CHECKPOINTS,
    CONFIG_COPY,
    LABEL_AUDIT,
    METRICS,
    MODEL_BEST,
    REPORT,
    REPORT_HTML,
)
from mlic.experiment.lock import experiment_lock
from mlic.metrics.label_issues import Issues, find_issues
from mlic.tasks import get_task
from mlic.train.resume import finished_stages
from mlic.train.stages import run
from mlic.utils import io
from mlic.utils.cli import printable, run_cli
from mlic.utils.errors import ConfigError, Interrupted
from mlic.utils.markdown import rows_table

log = logging.getLogger("mlic")

SECTION = "## Label audit"
COLUMNS = [
    "rank",
    "split",
    "id",
    "class",
    "given_label",
    "probability",
    "score",
    "flagged",
    "row_score",
    "image",
]


@dataclass
class Audit:
    """What the audit found: `label_audit.csv`'s rows, and each split's confident-learning result."""

    table: pd.DataFrame
    issues: dict[str, Issues]
    path: Path


def subset(table: LabelTable, rows: np.ndarray) -> LabelTable:
    """The rows `rows` of a classification split."""
    return LabelTable(table.source, table.ids[rows], table.paths[rows], table.targets[rows], table.classes)


def fold_config(config: Config, exp_dir: Path, fold: int, epochs: int | None) -> Config:
    """The experiment's config for fold `fold`: its run in `<exp_dir>/audit/fold-<fold>`, every stage
    at most `epochs` long, without the experiment's loggers or a sweep."""
    out = copy.copy(config)
    out.output_dir = str(exp_dir / AUDIT)
    out.experiment_name = f"fold-{fold}"
    if epochs is not None:
        out.stages = [replace(s, epochs=min(s.epochs, epochs)) for s in config.resolved_stages()]
    out.loggers, out.sweep, out.calibration, out.log_environment = [], None, None, False
    return out


def predict_table(model_path: Path, table: LabelTable, config: Config) -> np.ndarray:
    """The probabilities (rows × classes) the model file at `model_path` gives `table`'s images, with
    the config's test-time augmentation."""
    mf = load_model_file(model_path)
    loader = make_loader(table, mf.prep.transform(), config.data, train=False)
    module = eval_module(mf.model, config)
    return evaluate(module, config, {"valid": loader}, ["valid"]).outputs["valid"][0]


def _saved_fold(path: Path, ids: np.ndarray, classes: list[str]) -> np.ndarray | None:
    """A finished fold's probabilities, if `path` holds them for exactly these rows and classes."""
    if not path.is_file():
        return None
    try:
        saved = pd.read_csv(path, dtype={"id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    if list(saved.columns) != ["id", *classes] or saved["id"].tolist() != [str(i) for i in ids]:
        return None
    return saved[classes].to_numpy(dtype=np.float64)


def _finished(fold_dir: Path, stages: list[str]) -> bool:
    """Whether the fold's run trained every stage to its end (and wrote its model files)."""
    if not (fold_dir / MODEL_BEST).is_file() or not (fold_dir / CHECKPOINTS).is_dir():
        return False
    return set(stages) <= set(finished_stages(fold_dir / CHECKPOINTS))


def fold_probabilities(
    config: Config,
    exp_dir: Path,
    fold: int,
    tables: dict[str, LabelTable],
    held: np.ndarray,
    epochs: int | None,
) -> np.ndarray:
    """Out-of-sample probabilities of the train rows `held`: a model trained on the other train rows
    (resumed if an earlier audit was interrupted), or the saved ones of an earlier audit."""
    train = tables["train"]
    saved_path = exp_dir / AUDIT / f"fold-{fold}.csv"
    saved = _saved_fold(saved_path, train.ids[held], train.classes)
    if saved is not None:
        log.info("fold %d: the probabilities of an earlier audit (%s)", fold, saved_path)
        return saved
    fc = fold_config(config, exp_dir, fold, epochs)
    fold_dir = fc.experiment_dir
    others = np.setdiff1d(np.arange(len(train)), held)
    fold_tables = {"train": subset(train, others), "valid": tables["valid"]}
    log.info("fold %d: training on %d train rows to predict the other %d", fold, len(others), len(held))
    stages = [s.name for s in fc.resolved_stages()]
    if not _finished(fold_dir, stages):
        if (fold_dir / METRICS).is_file():  # an earlier audit stopped in this fold: go on from its last epoch
            run(fc, resume=True, tables=fold_tables)
        else:
            if fold_dir.exists():  # the audit's own folder, from a run that stopped before its first epoch
                shutil.rmtree(fold_dir)
            run(fc, tables=fold_tables)
        if not _finished(fold_dir, stages):
            raise Interrupted(f"fold {fold} stopped before its last epoch; run the audit again to resume it")
    probs = predict_table(fold_dir / MODEL_BEST, subset(train, held), fc)
    frame = pd.DataFrame(probs, columns=train.classes)
    frame.insert(0, "id", train.ids[held])
    io.write_with(saved_path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))
    shutil.rmtree(fold_dir / CHECKPOINTS, ignore_errors=True)  # only needed to resume; the model files stay
    return _saved_fold(saved_path, train.ids[held], train.classes)  # as saved: a rerun ranks the same


def audit_rows(split: str, table: LabelTable, probs: np.ndarray, issues: Issues) -> list[dict]:
    """One row per label of `split` that confident learning flags or the model disagrees with."""
    rows = []
    for r, c in zip(*np.nonzero(issues.flagged | issues.disagree)):
        rows.append(
            {
                "split": split,
                "id": str(table.ids[r]),
                "class": table.classes[c],
                "given_label": int(table.targets[r, c] > 0.5),
                "probability": float(probs[r, c]),
                "score": float(issues.class_score[r, c]),
                "flagged": bool(issues.flagged[r, c]),
                "row_score": float(issues.row_score[r]),
                "image": str(table.paths[r]),
            }
        )
    return rows


def run_audit(
    exp_dir: Path,
    folds: int = 3,
    epochs: int | None = None,
    config: Config | None = None,
    splits: Sequence[str] = ("train", "valid"),
) -> Audit:
    """Audit the labels of `splits` of the experiment in `exp_dir` (see the module's docstring)."""
    exp_dir = Path(exp_dir)
    if config is None:
        if not (exp_dir / CONFIG_COPY).is_file():
            raise ConfigError(f"{exp_dir} has no {CONFIG_COPY}: is it an experiment folder?")
        config = load_config(exp_dir / CONFIG_COPY)
    task = get_task(config.task)
    if task.pixelwise:
        raise ConfigError(
            f"the label audit is for classification; {exp_dir} is a {config.task} experiment (task={config.task!r})"
        )
    best = resolve_model_file(exp_dir, MODEL_BEST)  # a folder without a trained model stops here
    tables = read_splits(config.data, config.seed, config.task)
    train = tables["train"]
    if folds == 1 or not 0 <= folds <= len(train):
        raise ConfigError(
            f"--folds must be 0 (the experiment's model) or between 2 and the {len(train)} train rows, got {folds}"
        )
    multi_label = config.task == "multi_label"
    with experiment_lock(exp_dir, create=False):
        probs: dict[str, np.ndarray] = {}
        if "train" in splits:
            if folds == 0:  # in-sample: free, and as good at a short budget (docs/audit.md)
                probs["train"] = predict_table(best, train, config)
            else:
                probs["train"] = np.zeros(train.targets.shape)
                for i, held in enumerate(stratified_folds(train.targets, folds, config.seed), start=1):
                    probs["train"][held] = fold_probabilities(config, exp_dir, i, tables, held, epochs)
        if "valid" in splits:
            probs["valid"] = predict_table(best, tables["valid"], config)
        if folds == 0 and "valid" in probs:
            warn_if_memorised(probs, tables, multi_label)
        issues = {s: find_issues(tables[s].targets, p, multi_label) for s, p in probs.items()}
        rows = [row for s in probs for row in audit_rows(s, tables[s], probs[s], issues[s])]
        table = pd.DataFrame(rows, columns=COLUMNS[1:])
        table = table.sort_values(["split", "row_score", "score"], key=_split_order, kind="stable")
        first = (~table.duplicated(["split", "id"])).astype(int)
        table.insert(0, "rank", first.groupby(table["split"]).cumsum())  # 1 for a split's likeliest wrong row
        path = exp_dir / LABEL_AUDIT
        io.write_with(path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"))
        write_audit_section(exp_dir, config, table, {s: len(tables[s]) for s in probs}, folds, epochs)
        if (exp_dir / REPORT_HTML).is_file():
            refresh(exp_dir, config)
    return Audit(table, issues, path)


def _split_order(column: pd.Series) -> pd.Series:
    return column.map({"train": 0, "valid": 1}) if column.name == "split" else column


MEMORISED = 0.05  # in-sample loss below this share of valid's: the model has fitted its train labels


def mean_loss(targets: np.ndarray, probs: np.ndarray, multi_label: bool) -> float:
    """Mean BCE per label (multi-label), or mean cross-entropy of the given class (single-label)."""
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    if multi_label:
        return float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())
    return float(-np.log((p * targets).sum(1)).mean())


def warn_if_memorised(probs: dict[str, np.ndarray], tables: dict[str, LabelTable], multi_label: bool) -> None:
    """With --folds 0, say when the model fits its train rows so much better than valid that it has
    likely learned their wrong labels too (then it disagrees with few of them)."""
    train = mean_loss(tables["train"].targets, probs["train"], multi_label)
    valid = mean_loss(tables["valid"].targets, probs["valid"], multi_label)
    if train < MEMORISED * valid:
        log.warning(
            "--folds 0: the model's loss on its own train rows is %.4f against %.4f on valid: it has "
            "fitted its train labels, wrong ones too, and finds few of them this way; the default "
            "--folds 3 does not depend on it (docs/audit.md)",
            train,
            valid,
        )


def summary_lines(table: pd.DataFrame, sizes: dict[str, int], folds: int, epochs: int | None) -> list[str]:
    how = f"{folds} fold models, every stage at most {epochs} epochs" if epochs else f"{folds} fold models"
    lines = []
    for split, n in sizes.items():
        found = table[table["split"] == split]
        flagged = found[found["flagged"]]
        source = f"{how} that did not train on them" if split == "train" else "the experiment's model"
        if split == "train" and folds == 0:
            source = "the experiment's model, which trained on them"
        lines.append(
            f"{split}: the model disagrees with {len(found)} labels on {found['id'].nunique()} of {n} rows; "
            f"confident learning flags {len(flagged)} labels on {flagged['id'].nunique()} rows "
            f"({flagged['id'].nunique() / max(n, 1):.1%}); probabilities from {source}"
        )
    return lines


def write_audit_section(
    exp_dir: Path,
    config: Config,
    table: pd.DataFrame,
    sizes: dict[str, int],
    folds: int,
    epochs: int | None,
    top: int = 20,
) -> None:
    """The label-audit section of report.md (replaced when the audit runs again)."""
    lines = "\n".join(f"- {line}" for line in summary_lines(table, sizes, folds, epochs))
    shown = table.head(top).drop(columns=["row_score", "image"]).to_dict("records")
    listing = rows_table(shown, ".3f") if shown else "No label was flagged."
    section = f"""{SECTION}

`python -m mlic.audit` ranks the labels the model disagrees with (confident learning, cleanlab): the
likeliest wrong first. `score` is the label's quality (0 to 1, lower is likelier wrong); every flagged
label is in [`{LABEL_AUDIT}`]({LABEL_AUDIT}).

{lines}

{listing}
"""
    report = exp_dir / REPORT
    text = report.read_text(encoding="utf-8") if report.is_file() else f"# {config.experiment_name}\n"
    io.write_text(report, replace_section(text, SECTION, section))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlic.audit",
        description="Rank the train and valid labels a trained experiment's model disagrees with.",
    )
    parser.add_argument("experiment", type=Path, help="the experiment folder, e.g. experiments/demo")
    parser.add_argument(
        "--folds",
        type=int,
        default=3,
        help="models trained for train's out-of-sample probabilities (default 3)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="train every stage of the fold models at most this many epochs",
    )
    parser.add_argument("--top", type=int, default=10, help="suspicious labels to print (default 10)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")

    def _run() -> int:
        audit = run_audit(args.experiment, args.folds, args.epochs)
        table = audit.table
        sizes = {s: len(i.row_score) for s, i in audit.issues.items()}
        for line in summary_lines(table, sizes, args.folds, args.epochs):
            print(line)
        if len(table):
            shown = table.head(args.top).drop(columns=["row_score", "image"])
            for column in ("id", "class"):  # a newline in a user's name stays one line of the table
                shown[column] = shown[column].map(printable)
            print(shown.to_string(index=False))
        print(f"wrote {audit.path}")
        return 0

    return run_cli(_run, args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
