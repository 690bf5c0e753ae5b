"""Run the stages of a config: data → model → (freeze → fit) per stage → best model → report."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from mlic import io
from mlic.config import Config, Stage, config_copy_text
from mlic.data import ImageTransform, LabelTable, make_loader, read_rgb, read_splits
from mlic.errors import CheckpointError, ConfigError, DataError
from mlic.lr_finder import LRFinder, RangeTest, describe, range_test, save_curve
from mlic.metrics import f1_at, per_class, prior_logits, read_thresholds, tune_thresholds
from mlic.models import (
    Preprocessing,
    create_model,
    head_parameter_names,
    load_checkpoint,
    load_model_file,
    preprocessing,
    prior_init_head,
    resolve_model_file,
)
from mlic.module import ClassifierModule, current_lrs
from mlic.report import write_lr_report, write_report

log = logging.getLogger("mlic")

# Expected with a frozen backbone, whose BatchNorm layers are kept in eval mode on purpose.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def auto_precision() -> str:
    """Mixed precision on a GPU (bf16 where supported), full precision on a CPU."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def trainer_kwargs(config: Config) -> dict[str, Any]:
    """Lightning Trainer arguments: mlic's defaults, then the config's `trainer` dict on top."""
    kwargs: dict[str, Any] = {
        "accelerator": "auto",
        "devices": 1,
        "precision": auto_precision(),
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 10,
    }
    kwargs.update(config.trainer)
    if kwargs.get("precision") == "auto":
        kwargs["precision"] = auto_precision()
    return kwargs


class AtomicModelCheckpoint(ModelCheckpoint):
    """Lightning's top-k checkpointing, with each file written to a temporary name and renamed."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = os.path.join(os.path.dirname(filepath), f".{os.path.basename(filepath)}.tmp")
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero and os.path.exists(tmp):
            os.replace(tmp, filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


def model_file(
    model: torch.nn.Module, config: Config, classes: list[str], prep: Preprocessing, metrics: dict[str, Any]
) -> dict[str, Any]:
    """The plain-dict model file (`model.best.pth` and its kin): loadable with `weights_only=True`."""
    return {
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "model_name": config.model.name,
        "classes": list(classes),
        "img_size": list(prep.img_size),
        "normalization": {
            "mean": list(prep.mean),
            "std": list(prep.std),
            "interpolation": prep.interpolation,
        },
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
        # what rebuilding the model and thresholding its output need, without the config
        "model_kwargs": {k: v for k, v in config.model.kwargs.items() if _plain(v)},
        "threshold": config.threshold,
    }


def _plain(value: Any) -> bool:
    """True for values `torch.load(weights_only=True)` reads back: numbers, strings and lists of them."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


class EMARecorder(Callback):
    """An exponential moving average of the weights during one stage, written as `model.ema.pth`.

    Uses `torch.optim.swa_utils.AveragedModel` with `get_ema_multi_avg_fn`; BatchNorm buffers are
    averaged too (`use_buffers=True`), so the EMA model needs no BatchNorm re-estimation.
    """

    def __init__(self, recorder: ExperimentRecorder, decay: float) -> None:
        self.recorder = recorder
        self.decay = decay
        self.ema: torch.optim.swa_utils.AveragedModel | None = None
        self._step = -1
        self._restored: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        # saved in every checkpoint, so that --resume continues the average instead of restarting it
        return {"ema": self.ema.state_dict()} if self.ema is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored = state.get("ema")

    def on_train_start(self, trainer: L.Trainer, module: ClassifierModule) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self.ema = AveragedModel(
            module.model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True
        )
        if self._restored is not None:
            self.ema.load_state_dict(self._restored)
            self._restored = None

    def on_train_batch_end(self, trainer: L.Trainer, module: ClassifierModule, *args: Any) -> None:
        # once per optimizer step (with gradient accumulation, not every batch is one)
        if self.ema is None or trainer.global_step == self._step:
            return
        self._step = trainer.global_step
        self.ema.update_parameters(module.model)

    def on_train_epoch_end(self, trainer: L.Trainer, module: ClassifierModule) -> None:
        if self.ema is None or not trainer.is_global_zero:
            return
        row = dict(self.recorder.rows[-1]) if self.recorder.rows else {}
        row = {k: v for k, v in row.items() if k in ("stage", "epoch", "step")}
        row["ema_decay"] = self.decay
        file = model_file(
            self.ema.module, self.recorder.config, self.recorder.classes, self.recorder.prep, row
        )
        io.save_torch(self.recorder.exp_dir / "model.ema.pth", file)


class ExperimentRecorder(Callback):
    """Writes `metrics.csv` every epoch and `model.best.pth` whenever the monitored metric improves."""

    def __init__(self, exp_dir: Path, config: Config, classes: list[str], prep: Preprocessing) -> None:
        self.exp_dir = exp_dir
        self.config = config
        self.classes = classes
        self.prep = prep
        self.monitor = config.monitor
        self.mode = config.resolved_monitor_mode()
        self.rows: list[dict[str, Any]] = []
        self.best_value: float | None = None
        self.best_row: dict[str, Any] | None = None
        self.stage: Stage | None = None
        self._epoch_start = time.time()

    def model_file(self, module: ClassifierModule, metrics: dict[str, Any]) -> dict[str, Any]:
        return model_file(module.model, self.config, self.classes, self.prep, metrics)

    def _improved(self, value: float) -> bool:
        if value is None or math.isnan(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._epoch_start = time.time()

    def on_train_epoch_end(self, trainer: L.Trainer, module: ClassifierModule) -> None:
        summary = dict(module.epoch_summary)
        module.epoch_summary.clear()
        row: dict[str, Any] = {
            "stage": self.stage.name if self.stage else "",
            "epoch": trainer.current_epoch + 1,
            "step": trainer.global_step,
        }
        if trainer.optimizers:
            row.update(current_lrs(trainer.optimizers[0]))
        row.update(summary)
        row["time_s"] = round(time.time() - self._epoch_start, 2)
        self.rows.append(row)
        if not trainer.is_global_zero:
            return
        io.write_with(self.exp_dir / "metrics.csv", lambda p: pd.DataFrame(self.rows).to_csv(p, index=False))
        value = summary.get(self.monitor)
        if self._improved(value):
            self.best_value = value
            self.best_row = row
            io.save_torch(self.exp_dir / "model.best.pth", self.model_file(module, row))

    def restore(self, rows: list[dict[str, Any]]) -> None:
        """Continue after the rows of an interrupted run: its best model stays the one to beat."""
        self.rows = list(rows)
        for row in rows:
            value = row.get(self.monitor)
            if isinstance(value, (int, float)) and self._improved(value):
                self.best_value, self.best_row = value, row
        best = self.exp_dir / "model.best.pth"
        if best.is_file():  # it may come from an epoch that runs again
            saved = torch.load(best, map_location="cpu", weights_only=True).get("metrics", {})
            value = saved.get(self.monitor)
            if isinstance(value, (int, float)) and self._improved(value):
                self.best_value, self.best_row = value, saved

    def save_last(self, module: ClassifierModule) -> None:
        last = self.rows[-1] if self.rows else {}
        io.save_torch(self.exp_dir / "model.last.pth", self.model_file(module, last))


def _set_aside_previous_run(exp_dir: Path) -> None:
    """A rerun never overwrites an earlier run: its folder is renamed with a timestamp."""
    if exp_dir.is_dir() and any(exp_dir.iterdir()):
        log.warning("an earlier run of %s was moved to %s", exp_dir.name, io.set_aside(exp_dir))


def training_device(config: Config) -> str:
    """ "cuda" when the config's trainer settings put training on a GPU, else "cpu"."""
    return "cuda" if _device_name(trainer_kwargs(config)).startswith("cuda") else "cpu"


def _device_name(kwargs: dict[str, Any]) -> str:
    if kwargs.get("accelerator") in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return str(kwargs.get("accelerator")) if kwargs.get("accelerator") != "auto" else "cpu"


def _make_trainer(config: Config, stage: Stage, exp_dir: Path, recorder: ExperimentRecorder) -> L.Trainer:
    swa_stage = stage.name == config.swa_stage()
    # with swa.last_k the SWA stage keeps its last k epochs ("epoch" is a metric ModelCheckpoint knows)
    keep_last = swa_stage and config.swa.selection == "last"
    checkpoint = AtomicModelCheckpoint(
        dirpath=exp_dir / "checkpoints",
        filename=f"{stage.name}-epoch{{epoch:02d}}",
        monitor="epoch" if keep_last else config.monitor,
        mode="max" if keep_last else config.resolved_monitor_mode(),
        save_top_k=config.kept_checkpoints(stage.name),
        save_last=True,  # <stage>-last.ckpt: where --resume continues from
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    checkpoint.CHECKPOINT_NAME_LAST = f"{stage.name}-last"
    callbacks = [recorder, checkpoint, LearningRateMonitor(logging_interval="epoch")]
    if swa_stage and config.swa.ema_decay is not None:
        callbacks.append(EMARecorder(recorder, config.swa.ema_decay))
    callbacks += config.callbacks
    logger = CSVLogger(save_dir=str(exp_dir), name="logs", version=stage.name)
    return L.Trainer(
        max_epochs=stage.epochs,
        callbacks=callbacks,
        logger=logger,
        default_root_dir=str(exp_dir),
        **trainer_kwargs(config),
    )


def _eval_trainer(config: Config) -> L.Trainer:
    kwargs = trainer_kwargs(config)
    kwargs.update(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    return L.Trainer(**kwargs)


def evaluate(
    module: ClassifierModule, config: Config, loaders: dict[str, Any], splits: list[str]
) -> dict[str, dict[str, float]]:
    """Metrics of the module's current weights on each of `splits`."""
    trainer = _eval_trainer(config)
    results: dict[str, dict[str, float]] = {}
    for split in splits:
        if split not in loaders:
            continue
        module.epoch_summary.clear()
        if split == "test":
            trainer.test(module, loaders[split], verbose=False)
        else:
            trainer.validate(module, loaders[split], verbose=False)
        results[split] = {
            k.split("/", 1)[1]: v for k, v in module.epoch_summary.items() if k.startswith(split)
        }
    module.epoch_summary.clear()
    return results


def build_loaders(
    config: Config, tables: dict[str, LabelTable], prep: Preprocessing
) -> dict[str, torch.utils.data.DataLoader]:
    """Train loader (augmented, shuffled) and plain loaders for valid/test."""
    d = config.data
    plain = ImageTransform(prep.img_size, prep.mean, prep.std, None, prep.interpolation)
    train_tf = ImageTransform(prep.img_size, prep.mean, prep.std, d.augmentations, prep.interpolation)
    # one image through the train transform now, so a broken augmentation stops before training
    copy.deepcopy(train_tf)(read_rgb(str(tables["train"].paths[0])))
    loaders = {"train": make_loader(tables["train"], train_tf, d, train=True, seed=config.seed)}
    for split in ("valid", "test"):
        if split in tables:
            loaders[split] = make_loader(tables[split], plain, d, train=False)
    return loaders


TUNED = ("f1_micro_tuned", "f1_macro_tuned")


def apply_thresholds(
    exp_dir: Path,
    config: Config,
    classes: list[str],
    outputs: dict[str, Any],
    results: dict[str, dict[str, float]],
) -> np.ndarray | None:
    """Tune per-class thresholds on valid, save `thresholds.json`, add tuned F1s to `results`."""
    if "valid" not in outputs:
        return None
    probs, targets = outputs["valid"]
    # not rounded: a threshold sits midway between two probabilities that may differ by 1e-7
    thresholds = tune_thresholds(probs, targets, config.threshold)
    io.write_json(exp_dir / "thresholds.json", {c: float(t) for c, t in zip(classes, thresholds)})
    for split, (probs, targets) in outputs.items():
        if split in results:
            tuned = f1_at(probs, targets, thresholds)
            results[split].update({f"{k}_tuned": v for k, v in tuned.items()})
    return thresholds


def per_class_rows(
    classes: list[str],
    tables: dict[str, LabelTable],
    outputs: dict[str, Any],
    threshold: float,
    thresholds: np.ndarray | None,
) -> list[dict[str, Any]]:
    """One row per class: support per split, AP on valid and test, test F1 at the global and tuned thresholds."""
    rows: list[dict[str, Any]] = [{"class": c} for c in classes]
    for split, table in tables.items():
        for row, n in zip(rows, table.targets.sum(0)):
            row[f"{split} support"] = int(n)
    last = "test" if "test" in outputs else "valid" if "valid" in outputs else None
    for split, (probs, targets) in outputs.items():
        for row, stats in zip(rows, per_class(probs, targets, threshold)):
            row[f"{split} AP"] = stats["ap"]
            if split == last:
                row[f"{last} F1 @{threshold:g}"] = stats["f1"]
    if last:
        probs, targets = outputs[last]
        if thresholds is not None:
            for row, stats, t in zip(rows, per_class(probs, targets, thresholds), thresholds):
                row[f"{last} F1 tuned"] = stats["f1"]
                row["threshold"] = float(t)
    return rows


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A small fixed-width table of metrics, one row per split."""
    columns = ["loss", "map", "auc", "f1_micro", "f1_macro"]
    columns += [c for c in TUNED if any(c in values for values in results.values())]
    width = max([8, *(len(split) + 2 for split in results)])
    widths = [max(10, len(c) + 2) for c in columns]
    lines = [f"{'split':<{width}}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths))]
    for split, values in results.items():
        cells = "".join(f"{values.get(c, float('nan')):>{w}.4f}" for c, w in zip(columns, widths))
        lines.append(f"{split:<{width}}" + cells)
    return "\n".join(lines)


@dataclass
class Prepared:
    """Everything a run needs, built and checked before anything is written or trained."""

    tables: dict[str, LabelTable]
    classes: list[str]
    prep: Preprocessing
    module: ClassifierModule
    exp_dir: Path


def setup_loss(loss: Any, train: LabelTable, classes: list[str]) -> None:
    """Give the loss the train labels when it wants them, then try it on one batch of the train targets,
    so a loss that does not fit these classes stops before anything is written or trained."""
    if hasattr(loss, "setup"):  # e.g. BCEWithLogitsLoss(pos_weight="auto") reads the train labels
        loss.setup(train.targets)
        weight = getattr(loss, "pos_weight", None)
        if getattr(loss, "auto", False) and weight is not None:
            pairs = ", ".join(f"{c} {float(w):.2f}" for c, w in zip(classes, weight))
            log.info("pos_weight from the train labels (negatives/positives): %s", pairs)
    targets = torch.from_numpy(np.array(train.targets[:4], dtype=np.float32))  # a writable copy
    try:
        value = loss(torch.zeros_like(targets), targets)
    except Exception as e:  # noqa: BLE001 - any failure of user code is reported with the field
        raise ConfigError(
            f"field 'loss': {type(loss).__name__} fails on a batch of {len(classes)} classes: "
            f"{type(e).__name__}: {e}"
        ) from None
    if not (isinstance(value, torch.Tensor) and value.numel() == 1):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ConfigError(
            f"field 'loss': {type(loss).__name__} must return one number per batch, got {shape}; "
            f"use reduction='mean' or 'sum'"
        )


def _constant_loss(loss: Any, targets: np.ndarray, logits: np.ndarray) -> float:
    """The config's loss over the train labels when every image gets the same `logits`."""
    y = torch.from_numpy(np.array(targets, dtype=np.float32))
    with torch.no_grad():
        return float(loss(torch.as_tensor(logits, dtype=torch.float32).expand_as(y), y))


def prepare(config: Config, resume: bool = False) -> Prepared:
    """Read and check the data, build the model (weights, checkpoint), then open the experiment folder
    (a new one, or with `resume` the interrupted one, kept as it is)."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    tables = read_splits(config.data)
    classes = tables["train"].classes
    model = create_model(config.model, len(classes))
    head_loaded = False
    if config.model.checkpoint:
        head_loaded = load_checkpoint(model, Path(config.model.checkpoint), config.model.name, classes)
    setup_loss(config.loss, tables["train"], classes)
    train_targets = tables["train"].targets
    pos_weight = getattr(config.loss, "pos_weight", None)
    logits = prior_logits(train_targets, pos_weight.numpy() if isinstance(pos_weight, torch.Tensor) else None)
    start_loss = _constant_loss(config.loss, train_targets, logits)
    if config.model.prior_init and not head_loaded and not resume:
        if prior_init_head(model, logits):
            log.info(
                "the new head starts at the class frequencies of the train split (prior loss %.4f); "
                "Model(prior_init=False) turns this off",
                start_loss,
            )
        else:
            log.warning(
                "model.prior_init: %s has no classifier bias with one value per class; its head keeps "
                "timm's initialisation",
                config.model.name,
            )
    prep = preprocessing(model, config.data.img_size)
    head_parameter_names(model, prep.img_size)
    exp_dir = config.experiment_dir
    if resume:
        _check_resumable(exp_dir, classes)
    else:
        _set_aside_previous_run(exp_dir)
        exp_dir.mkdir(parents=True, exist_ok=True)
        io.write_text(exp_dir / "config.py", config_copy_text(config))
        io.write_json(exp_dir / "classes.json", classes)
    module = ClassifierModule(
        model,
        config.loss,
        config.optimizer,
        config.scheduler,
        threshold=config.threshold,
        freeze_bn=config.model.freeze_bn,
    )
    module.prior_loss = start_loss
    kwargs = trainer_kwargs(config)
    log.info("device: %s, precision %s", _device_name(kwargs), kwargs["precision"])
    return Prepared(tables, classes, prep, module, exp_dir)


def _check_resumable(exp_dir: Path, classes: list[str]) -> None:
    if not (exp_dir / "metrics.csv").is_file():
        raise CheckpointError(
            f"nothing to resume in {exp_dir}: it has no metrics.csv (no epoch finished); train without --resume"
        )
    saved = json.loads((exp_dir / "classes.json").read_text(encoding="utf-8"))
    if saved != classes:
        raise DataError(
            f"{exp_dir / 'classes.json'} lists other classes than the data now has; "
            f"resume with the data the run started with, or train without --resume"
        )


@dataclass
class ResumePoint:
    """Where an interrupted run stands: how far each stage got, and the rows of those epochs."""

    rows: list[dict[str, Any]]
    done: dict[str, int]  # epochs of each stage saved in its `<stage>-last.ckpt`
    complete: set[str]  # stages that ran to their end (all epochs, or an early stop)


def resume_point(config: Config) -> ResumePoint:
    """How far each stage got, by its last checkpoint (saved after every epoch's row of metrics.csv,
    so a row without a checkpoint belongs to an epoch that will run again and is dropped)."""
    from mlic.swa import read_info

    folder = config.experiment_dir / "checkpoints"
    stages = config.resolved_stages()
    finished = set(_finished_stages(folder))
    done = {}
    for stage in stages:
        last = folder / f"{stage.name}-last.ckpt"
        done[stage.name] = int(read_info(last).epoch or 0) if last.is_file() else 0
    complete = {s.name for s in stages if s.name in finished}
    for i, stage in enumerate(stages):  # a stage before one that trained has finished, early or not
        if any(done[later.name] > 0 for later in stages[i + 1 :]):
            complete.add(stage.name)
    # stage names stay text whatever they look like ("1", "NA"); only empty cells are missing values
    df = pd.read_csv(
        config.experiment_dir / "metrics.csv", dtype={"stage": str}, keep_default_na=False, na_values=[""]
    )
    rows = [
        {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
        for row in df.to_dict("records")
        if row["epoch"] <= done.get(row["stage"], 0)
    ]
    return ResumePoint(rows, done, complete)


def _finished_stages(folder: Path) -> list[str]:
    path = folder / "stages.json"
    return list(json.loads(path.read_text(encoding="utf-8")).get("finished", [])) if path.is_file() else []


def _mark_finished(folder: Path, stage: str) -> None:
    """Record that `stage` ran to its end (all epochs, or stopped early on purpose), for --resume."""
    finished = [s for s in _finished_stages(folder) if s != stage] + [stage]
    io.write_json(folder / "stages.json", {"finished": finished})


def _autocast_dtype(precision: Any) -> torch.dtype | None:
    text = str(precision)
    if text.startswith("bf16"):
        return torch.bfloat16
    if text.startswith("16"):
        return torch.float16
    return None


def _finder_settings(stage: Stage, default: LRFinder | None) -> LRFinder:
    if isinstance(stage.lr, LRFinder):
        return stage.lr
    return default or LRFinder()


def _wants_range_test(stage: Stage) -> bool:
    return stage.lr == "find" or isinstance(stage.lr, LRFinder)


def stage_range_test(
    config: Config, run_: Prepared, stage: Stage, settings: LRFinder, suffix: str
) -> RangeTest:
    """Run the LR range test for `stage` on the current weights and save its curve."""
    module = run_.module
    module.set_stage(replace(stage, lr=None) if not isinstance(stage.lr, (int, float)) else stage)
    optimizer = module.build_optimizer()
    # a copy: an albumentations pipeline keeps its own generator, which training must find untouched
    augmentations = copy.deepcopy(config.data.augmentations)
    train_tf = ImageTransform(
        run_.prep.img_size, run_.prep.mean, run_.prep.std, augmentations, run_.prep.interpolation
    )
    loader = make_loader(run_.tables["train"], train_tf, config.data, train=True, seed=config.seed)
    kwargs = trainer_kwargs(config)
    device = training_device(config)
    module.to(device)
    if config.trainer.get("enable_progress_bar") is False:
        settings = replace(settings, progress=False)
    result = range_test(
        module,
        optimizer,
        loader,
        module.loss_fn,
        settings,
        device,
        _autocast_dtype(kwargs["precision"]),
        label=f"stage {stage.name}",
    )
    module.to("cpu")
    save_curve(
        result,
        run_.exp_dir / f"lr_finder{suffix}.csv",
        run_.exp_dir / f"lr_finder{suffix}.png",
        title=f"{config.experiment_name}: stage {stage.name}",
    )
    log.info(describe(result, stage.name))
    if result.stopped_early:
        log.warning(
            "the range test of stage %s stopped after %d of %d steps: the loss diverged at LR %.2e",
            stage.name,
            len(result.lrs),
            settings.num_steps,
            result.lrs[-1],
        )
    return result


def _suffixes(stages: list[Stage]) -> dict[str, str]:
    """`lr_finder.csv` when one stage is tested, `lr_finder_<stage>.csv` for each when several are."""
    if len(stages) == 1:
        return {stages[0].name: ""}
    return {s.name: f"_{s.name}" for s in stages}


def run_lr_find(config: Config) -> Path:
    """Only the LR range test, for every stage of the config on its starting weights; no training."""
    run_ = prepare(config)
    stages = config.resolved_stages()
    suffixes = _suffixes(stages)
    results = {}
    for stage in stages:
        settings = _finder_settings(stage, config.lr_finder)
        results[stage.name] = stage_range_test(config, run_, stage, settings, suffixes[stage.name])
    write_lr_report(run_.exp_dir, config, results, suffixes)
    print()
    for name, result in results.items():
        print(describe(result, name))
    print(f"\nexperiment folder: {run_.exp_dir}")
    return run_.exp_dir


def run_evaluate(
    config: Config, split: str, weights: str | Path | None = None
) -> dict[str, dict[str, float]]:
    """Evaluate a model file of the experiment (default `model.best.pth`) on `split`; print the table."""
    exp_dir = config.experiment_dir
    path = resolve_model_file(exp_dir, weights or "model.best.pth")
    mf = load_model_file(path)
    tables = read_splits(config.data)
    if split not in tables:
        raise ConfigError(f"the config has no {split} split (data.{split} is None)")
    if tables["train"].classes != mf.classes:
        raise DataError(
            f"{path} was trained on the classes {', '.join(mf.classes)}, but {config.data.train} has "
            f"{', '.join(tables['train'].classes)}"
        )
    setup_loss(config.loss, tables["train"], mf.classes)
    prep = mf.prep
    plain = ImageTransform(prep.img_size, prep.mean, prep.std, None, prep.interpolation)
    loaders = {split: make_loader(tables[split], plain, config.data, train=False)}
    module = ClassifierModule(
        mf.model, config.loss, config.optimizer, config.scheduler, threshold=config.threshold
    )
    results = evaluate(module, config, loaders, [split])
    thresholds, _ = read_thresholds(exp_dir, mf.classes, default=None)
    if thresholds is not None and split in module.last_outputs:
        probs, targets = module.last_outputs[split]
        results[split].update({f"{k}_tuned": v for k, v in f1_at(probs, targets, thresholds).items()})
    print(f"\n{config.experiment_name}: {path} on {split} ({len(tables[split])} images)")
    print(format_table(results))
    if thresholds is not None:
        print(f"(*_tuned: F1 with the per-class thresholds of {exp_dir / 'thresholds.json'})")
    return results


def _resume_stage(config: Config, module: ClassifierModule, point: ResumePoint) -> tuple[int, Path | None]:
    """Index of the first unfinished stage and the checkpoint it continues from (None: it starts afresh
    from the weights the previous stage ended with, loaded here)."""
    stages = config.resolved_stages()
    folder = config.experiment_dir / "checkpoints"
    for i, stage in enumerate(stages):
        done = point.done.get(stage.name, 0)
        if done >= stage.epochs or stage.name in point.complete:
            continue
        if done > 0:
            last = folder / f"{stage.name}-last.ckpt"
            if not last.is_file():
                raise CheckpointError(f"cannot resume stage {stage.name}: {last} does not exist")
            log.info("resuming stage %s after epoch %d of %d from %s", stage.name, done, stage.epochs, last)
            return i, last
        if i > 0:
            previous = folder / f"{stages[i - 1].name}-last.ckpt"
            if not previous.is_file():
                raise CheckpointError(f"cannot resume at stage {stage.name}: {previous} does not exist")
            from mlic.swa import load_weights

            module.model.load_state_dict(load_weights(previous))
            log.info("resuming at the start of stage %s with the weights of %s", stage.name, previous)
        return i, None
    if (config.experiment_dir / "report.md").is_file():
        raise ConfigError(
            f"every stage of {config.experiment_name} has finished and its report is written "
            f"({config.experiment_dir / 'report.md'}): nothing to resume"
        )
    log.info("every stage has finished; resuming with the final evaluation and report")
    return len(stages), None


def run(config: Config, lr_find: bool = False, resume: bool = False) -> Path:
    """Train every stage of `config` and write the experiment folder; return its path.

    With `config.lr_finder` set (or `lr_find=True`, the `--lr-find` flag) only the LR range test runs.
    With `resume` an interrupted run continues in its own folder: finished stages are skipped and an
    unfinished one continues from its last checkpoint (weights, optimizer, scheduler, epoch).
    """
    if lr_find or config.lr_finder is not None:
        if resume:
            raise ConfigError(
                "a range-test config (lr_finder=...) trains nothing, so there is nothing to resume"
            )
        return run_lr_find(config)
    run_ = prepare(config, resume=resume)
    exp_dir, module = run_.exp_dir, run_.module
    loaders = build_loaders(config, run_.tables, run_.prep)
    recorder = ExperimentRecorder(exp_dir, config, run_.classes, run_.prep)
    stages = config.resolved_stages()
    first, ckpt_path = 0, None
    if resume:
        point = resume_point(config)
        first, ckpt_path = _resume_stage(config, module, point)
        recorder.restore(point.rows)
    suffixes = _suffixes([s for s in stages if _wants_range_test(s)])
    range_tests: dict[str, RangeTest] = {}
    started = time.time() - sum(float(r.get("time_s", 0)) for r in recorder.rows)  # epochs before a resume
    for index, stage in enumerate(stages):
        if index < first:
            continue
        continuing = index == first and ckpt_path is not None
        if continuing and not isinstance(stage.lr, (int, float)):
            stage = replace(stage, lr=None)  # its LRs come back with the optimizer state of the checkpoint
        elif _wants_range_test(stage):
            result = stage_range_test(
                config, run_, stage, _finder_settings(stage, None), suffixes[stage.name]
            )
            range_tests[stage.name] = result
            lr = result.suggestion
            if lr is None:
                lr = module.build_optimizer().defaults["lr"]
                log.warning(
                    "no LR suggestion for stage %s; it trains with the optimizer's lr %.2e", stage.name, lr
                )
            stage = replace(stage, lr=lr)
        log.info(
            "stage %s: %d epoch(s), backbone %s, lr %s",
            stage.name,
            stage.epochs,
            "frozen" if stage.freeze_backbone else "trainable",
            f"{stage.lr:.2e}" if stage.lr is not None else "from the optimizer",
        )
        module.set_stage(stage)
        recorder.stage = stage
        trainer = _make_trainer(config, stage, exp_dir, recorder)
        trainer.fit(
            module, loaders["train"], loaders["valid"], ckpt_path=str(ckpt_path) if continuing else None
        )
        recorder.save_last(module)
        if trainer.interrupted:
            log.warning("training interrupted in stage %s; what was written is kept", stage.name)
            break
        _mark_finished(exp_dir / "checkpoints", stage.name)
    train_time = time.time() - started

    best_path = exp_dir / "model.best.pth"
    if not best_path.exists():  # no epoch had a finite monitored value
        log.warning("%s was never finite; reporting the last weights instead of the best", config.monitor)
        best_path = exp_dir / "model.last.pth"
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    module.model.load_state_dict(best["state_dict"])
    results = evaluate(module, config, loaders, ["valid", "test"])
    outputs = {s: module.last_outputs[s] for s in results if s in module.last_outputs}
    thresholds = apply_thresholds(exp_dir, config, run_.classes, outputs, results)
    classes_table = per_class_rows(run_.classes, run_.tables, outputs, config.threshold, thresholds)
    write_report(
        exp_dir, config, run_.classes, recorder.rows, recorder.best_row, results, train_time, classes_table
    )
    if range_tests:
        write_lr_report(exp_dir, config, range_tests, suffixes, append=True)
    print(
        f"\n{config.experiment_name}: best model ({config.monitor}) from stage "
        f"{best['metrics'].get('stage')}, epoch {best['metrics'].get('epoch')}"
    )
    print(format_table(results))
    if thresholds is not None:
        print(
            f"(*_tuned: F1 with the per-class thresholds tuned on valid, saved in {exp_dir / 'thresholds.json'})"
        )
    print(f"\nexperiment folder: {exp_dir}")
    return exp_dir
