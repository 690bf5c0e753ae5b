"""Checkpoint averaging (SWA over saved checkpoints): choose them, average them streaming in float64,
re-estimate BatchNorm statistics, and compare the result with the best single checkpoint."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from mlic import io
from mlic.config import Config
from mlic.errors import CheckpointError, ConfigError, DataError
from mlic.models import _read_state_dict, earlier_runs

log = logging.getLogger("mlic")


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model weights of a Lightning checkpoint or a mlic model file, on the CPU."""
    state, _ = _read_state_dict(Path(path), "checkpoint")
    return state


def average_checkpoints(
    paths: Sequence[Path], load: Callable[[Path], dict[str, torch.Tensor]] = load_weights
) -> dict[str, torch.Tensor]:
    """The parameter-wise mean of the checkpoints at `paths`, holding one checkpoint at a time.

    Floating-point tensors are summed in float64 and stored back in their own dtype. Integer buffers
    (BatchNorm's `num_batches_tracked`) are not averaged: they count steps, so the value of the last
    checkpoint in `paths` is kept.
    """
    if len(paths) < 2:
        raise CheckpointError(f"averaging needs at least two checkpoints, got {len(paths)}")
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for i, path in enumerate(paths):
        state = load(path)
        if i == 0:
            dtypes = {k: v.dtype for k, v in state.items()}
            total = {k: (v.double() if v.is_floating_point() else v.clone()) for k, v in state.items()}
        else:
            _check_same_layout(total, state, paths[0], path)
            for key, value in state.items():
                if value.is_floating_point():
                    total[key] += value.double()
                else:
                    total[key] = value.clone()
        del state  # only the running sum and one checkpoint are ever resident
    n = len(paths)
    return {k: (v / n).to(dtypes[k]) if dtypes[k].is_floating_point else v for k, v in total.items()}


def _check_same_layout(
    total: dict[str, torch.Tensor], state: dict[str, torch.Tensor], first: Path, path: Path
) -> None:
    if state.keys() != total.keys():
        missing = sorted(total.keys() - state.keys()) or sorted(state.keys() - total.keys())
        raise CheckpointError(
            f"checkpoint {path} holds other tensors than {first} (first difference: {missing[0]}); "
            f"average checkpoints of one model only"
        )
    for key, value in state.items():
        if value.shape != total[key].shape:
            raise CheckpointError(
                f"checkpoint {path} does not match {first}: {key} has shape {tuple(value.shape)}, "
                f"not {tuple(total[key].shape)}; average checkpoints of one architecture and class list only"
            )


# ------------------------------------------------------------------------------- choosing checkpoints

_NAME = re.compile(r"^(?P<stage>.+)-epoch(?P<epoch>\d+)")


@dataclass
class CheckpointInfo:
    """What a training run recorded about one checkpoint: its stage, epoch and metrics."""

    path: Path
    stage: str | None
    epoch: int | None
    metrics: dict[str, float]


def read_info(path: Path) -> CheckpointInfo:
    """Stage, epoch and metrics of a Lightning checkpoint written by `train.py` (memory-mapped read)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same sentence
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from None
    info = obj.get("mlic") if isinstance(obj, dict) else None
    if isinstance(info, dict):
        return CheckpointInfo(path, info.get("stage"), info.get("epoch"), dict(info.get("metrics", {})))
    match = _NAME.match(path.stem)  # a checkpoint from elsewhere: its name is all there is
    epoch = obj.get("epoch") if isinstance(obj, dict) else None
    return CheckpointInfo(
        path, match["stage"] if match else None, epoch + 1 if isinstance(epoch, int) else None, {}
    )


def _describe(infos: list[CheckpointInfo], stage: str) -> str:
    if not infos:
        return "no checkpoints"
    mine = [i.path.name for i in infos if i.stage == stage]
    other = [i.path.name for i in infos if i.stage != stage]
    parts = [f"{len(mine)} of stage {stage!r}" + (f" ({', '.join(mine)})" if mine else "")]
    if other:
        parts.append(f"{len(other)} of other stages ({', '.join(other)})")
    return " and ".join(parts)


def select_checkpoints(
    folder: Path, stage: str, selection: str, k: int, monitor: str, mode: str
) -> list[CheckpointInfo]:
    """The `k` best (`selection="top"`, by `monitor`) or last checkpoints of `stage` in `folder`,
    in epoch order. Fewer than two is an error that says what the folder holds."""
    # `<stage>-last.ckpt` (kept for --resume) repeats the latest epoch: not a candidate of its own
    paths = (
        sorted(p for p in folder.glob("*.ckpt") if not p.stem.endswith("-last")) if folder.is_dir() else []
    )
    infos = [read_info(p) for p in paths]
    candidates = [i for i in infos if i.stage == stage]
    if len(candidates) < 2:
        raise CheckpointError(
            f"{folder} holds {_describe(infos, stage)}; averaging needs at least two checkpoints of one stage: "
            f"train more epochs, choose another stage with --stage, or name files with --checkpoints"
        )
    if selection == "top":
        unranked = [i.path.name for i in candidates if not _finite(i.metrics.get(monitor))]
        if unranked:
            raise CheckpointError(
                f"checkpoint {folder / unranked[0]} records no value of {monitor}, so the best cannot be "
                f"chosen; use --last-k or --checkpoints"
            )
        ranked = sorted(candidates, key=lambda i: i.metrics[monitor], reverse=mode == "max")
        chosen = ranked[:k]
    else:
        chosen = sorted(candidates, key=lambda i: i.epoch or 0)[-k:]
    if len(chosen) < k:
        log.warning(
            "asked for %d checkpoints of stage %s but %s holds %d; averaging those",
            k,
            stage,
            folder,
            len(chosen),
        )
    return sorted(chosen, key=lambda i: i.epoch or 0)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# ----------------------------------------------------------------------------------------- BatchNorm


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def reestimate_bn(model: nn.Module, loader: Iterable, device: torch.device | str = "cpu") -> bool:
    """Recompute every BatchNorm layer's running statistics with one pass over `loader`.

    Uses `torch.optim.swa_utils.update_bn` (a cumulative average over batches; `(images, targets)`
    batches are understood). Returns False, doing nothing, for a model without BatchNorm.
    """
    if not has_batchnorm(model):
        return False
    model.to(device)
    with torch.no_grad():
        update_bn(loader, model, device=torch.device(device))
    return True


# --------------------------------------------------------------------------------------------- swa.py


def _reference_loader(config: Config, exp_dir: Path, classes: list[str], model: nn.Module) -> Callable:
    """`load` for average_checkpoints that refuses files of another model or class list."""
    own = {k: v.shape for k, v in model.state_dict().items()}
    what = f"the config's model {config.model.name!r} with {len(classes)} classes"

    def load(path: Path) -> dict[str, torch.Tensor]:
        state, meta = _read_state_dict(Path(path), "checkpoint")
        if meta.get("model_name") not in (None, config.model.name):
            raise CheckpointError(
                f"checkpoint {path} was trained as {meta['model_name']!r}, not as {what}; "
                f"average checkpoints of {exp_dir} only"
            )
        if meta.get("classes") is not None and list(meta["classes"]) != list(classes):
            raise CheckpointError(
                f"checkpoint {path} has another class list than {exp_dir / 'classes.json'}; "
                f"average checkpoints of one experiment only"
            )
        missing = sorted(own.keys() - state.keys()) or sorted(state.keys() - own.keys())
        if missing:
            raise CheckpointError(
                f"checkpoint {path} does not fit {what} (first differing tensor: {missing[0]}); "
                f"average checkpoints of {exp_dir} only"
            )
        for key, value in state.items():
            if value.shape != own[key]:
                raise CheckpointError(
                    f"checkpoint {path} does not fit {what}: {key} has shape {tuple(value.shape)}, "
                    f"not {tuple(own[key])}; average checkpoints of one architecture and class list only"
                )
        return state

    return load


def replace_section(text: str, heading: str, section: str) -> str:
    """`text` with the Markdown section `heading` (up to the next `## `) replaced by `section`, or appended."""
    start = text.find(f"\n{heading}\n")
    if start < 0:
        return text.rstrip("\n") + "\n\n" + section
    end = text.find("\n## ", start + len(heading) + 2)
    rest = text[end:] if end >= 0 else ""
    return text[:start].rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n" + rest


SECTION = "## Checkpoint averaging (SWA)"


def run_swa(
    config: Config,
    checkpoints: Sequence[str | Path] | None = None,
    selection: str | None = None,
    k: int | None = None,
    stage: str | None = None,
    update_bn: bool | None = None,
) -> Path:
    """Average checkpoints of `config`'s experiment into `model.swa.pth`, re-estimate BatchNorm, and
    compare it with `model.best.pth` (and `model.ema.pth` when present) on valid and test."""
    from mlic.data import ImageTransform, make_loader, read_splits
    from mlic.models import create_model, load_model_file
    from mlic.module import ClassifierModule
    from mlic.report import markdown_table
    from mlic.stages import evaluate, format_table, model_file, setup_loss, training_device

    exp_dir = config.experiment_dir
    best_path = exp_dir / "model.best.pth"
    if not best_path.is_file():
        older = earlier_runs(exp_dir)
        moved = f"; the previous run of this experiment was moved to {older[-1]}" if older else ""
        raise CheckpointError(
            f"{best_path} does not exist: train the experiment first (`python train.py CONFIG`); "
            f"swa.py averages the checkpoints a training run kept{moved}"
        )
    best = load_model_file(best_path)
    classes, prep = best.classes, best.prep
    if best.model_name != config.model.name:
        raise CheckpointError(
            f"{best_path} was trained as {best.model_name!r} but the config builds "
            f"{config.model.name!r}; run swa.py with the config that trained {exp_dir}"
        )
    tables = read_splits(config.data)
    if tables["train"].classes != classes:
        raise DataError(
            f"the classes of {config.data.train} ({', '.join(tables['train'].classes)}) are not those the "
            f"experiment was trained on ({exp_dir / 'classes.json'}: {', '.join(classes)})"
        )
    setup_loss(config.loss, tables["train"], classes)  # as in training: pos_weight="auto" reads the labels
    stage = stage or config.swa_stage()
    names = [s.name for s in config.resolved_stages()]
    if stage not in names and not checkpoints:
        raise ConfigError(f"--stage {stage}: the config has no such stage (stages: {', '.join(names)})")
    selection = selection or config.swa.selection
    k = k or config.swa.k
    if checkpoints:
        paths = [Path(p) for p in checkpoints]
        if len(paths) < 2:
            raise CheckpointError(f"--checkpoints names {len(paths)} file; averaging needs at least two")
        for p in paths:
            if not p.is_file():
                raise CheckpointError(f"checkpoint {p} does not exist")
        seen = [p.resolve() for p in paths]
        twice = next((p for i, p in enumerate(paths) if seen[i] in seen[:i]), None)
        if twice is not None:
            raise ConfigError(f"--checkpoints names {twice} twice; name each checkpoint once")
        stages = sorted({i.stage for i in map(read_info, paths) if i.stage})
        if len(stages) > 1:
            log.warning("--checkpoints mixes stages (%s); averaging them as asked", ", ".join(stages))
        how = "named on the command line"
    else:
        infos = select_checkpoints(
            exp_dir / "checkpoints", stage, selection, k, config.monitor, config.resolved_monitor_mode()
        )
        paths = [i.path for i in infos]
        how = (
            f"the {len(paths)} best of stage `{stage}` by `{config.monitor}`"
            if selection == "top"
            else f"the last {len(paths)} epochs of stage `{stage}`"
        )
    log.info("averaging %d checkpoints: %s", len(paths), ", ".join(p.name for p in paths))

    model = create_model(replace(config.model, pretrained=False, checkpoint=None), len(classes))
    state = average_checkpoints(paths, _reference_loader(config, exp_dir, classes, model))
    model.load_state_dict(state)
    del state

    plain = ImageTransform(prep.img_size, prep.mean, prep.std, None, prep.interpolation)
    loaders = {s: make_loader(t, plain, config.data, train=False) for s, t in tables.items()}
    device = training_device(config)
    update_bn = config.swa.update_bn if update_bn is None else update_bn
    stage_cfg = next((s for s in config.resolved_stages() if s.name == stage), None)
    frozen = bool(stage_cfg and stage_cfg.freeze_backbone and config.model.freeze_bn)
    if not update_bn:
        bn_text = "BatchNorm statistics were averaged, not re-estimated (update_bn off)"
    elif frozen and not checkpoints:
        bn_text = (
            f"BatchNorm statistics kept as trained: stage {stage} froze the backbone and its BatchNorm "
            f"(model.freeze_bn), so the head was trained against them"
        )
    elif reestimate_bn(model, loaders["train"], device):
        bn_text = (
            f"BatchNorm statistics re-estimated with one pass over the {len(tables['train'])} training "
            f"images, without augmentation"
        )
    else:
        bn_text = "the model has no BatchNorm layers, so there were no statistics to re-estimate"
    log.info(bn_text)
    model.cpu()

    module = ClassifierModule(
        model, config.loss, config.optimizer, config.scheduler, threshold=config.threshold
    )
    results: dict[str, dict[str, float]] = {}
    swa_results = evaluate(module, config, loaders, ["valid", "test"])
    metrics: dict[str, Any] = {"stage": stage, "epoch": "swa", "swa_of": ", ".join(p.name for p in paths)}
    metrics.update(
        {f"{split}/{name}": v for split, values in swa_results.items() for name, v in values.items()}
    )
    out = exp_dir / "model.swa.pth"
    if out.exists():  # an earlier average is kept, not overwritten
        log.warning("the earlier model.swa.pth was moved to %s", io.set_aside(out).name)
    io.save_torch(out, model_file(module.model, config, classes, prep, metrics))

    module.model.load_state_dict(best.model.state_dict())
    for split, values in evaluate(module, config, loaders, ["valid", "test"]).items():
        results[f"best/{split}"] = values
    for split, values in swa_results.items():
        results[f"swa/{split}"] = values
    ema_path = exp_dir / "model.ema.pth"
    if ema_path.is_file():
        module.model.load_state_dict(load_model_file(ema_path).model.state_dict())
        for split, values in evaluate(module, config, loaders, ["valid", "test"]).items():
            results[f"ema/{split}"] = values

    b = best.metrics
    section = f"""{SECTION}

- `model.swa.pth`: the average of {how}: {", ".join(f"`{p.name}`" for p in paths)}
- {bn_text}
- `best` is `model.best.pth` (stage `{b.get("stage")}`, epoch {b.get("epoch")})"""
    if ema_path.is_file():
        section += "\n- `ema` is `model.ema.pth`, the moving average of the weights kept during training"
    section += f"\n\n{markdown_table(results)}\n"
    report = exp_dir / "report.md"
    text = report.read_text(encoding="utf-8") if report.is_file() else f"# {config.experiment_name}\n"
    io.write_text(report, replace_section(text, SECTION, section))

    print(f"\n{config.experiment_name}: SWA of {len(paths)} checkpoints ({', '.join(p.name for p in paths)})")
    print(bn_text)
    print(format_table(results))
    print(f"\nwrote {exp_dir / 'model.swa.pth'}")
    return exp_dir / "model.swa.pth"
