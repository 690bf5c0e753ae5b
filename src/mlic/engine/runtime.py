"""Where and how training runs: the device, the precision, Lightning's Trainer arguments, autocast, and
the Lightning warnings mlic expects."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch

from mlic.config.schema import Config
from mlic.utils.errors import ConfigError

# Warnings Lightning gives for what mlic does on purpose: a frozen backbone keeps its BatchNorm layers in
# eval mode; checkpoints of several stages share one folder (and a resumed stage its Lightning log folder,
# whose CSV our metrics.csv repeats); small data sets get few loader workers.
EXPECTED_WARNINGS = (
    r".*module\(s\) in eval mode at the start of training.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*Experiment logs directory .* exists and is not empty.*",
    r".*does not have many workers.*",
    r".*isinstance\(treespec, LeafSpec\).*",
)


@contextlib.contextmanager
def expected_warnings_silenced() -> Iterator[None]:
    """Hide `EXPECTED_WARNINGS` inside the block only (the process's warning filters are left alone)."""
    with warnings.catch_warnings():
        for pattern in EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        yield


def _launched_processes(trainer: dict[str, Any]) -> dict[str, Any]:
    """Under torchrun or SLURM (WORLD_SIZE or SLURM_NTASKS above 1) the processes already exist: train
    on all of them with DDP unless the config says otherwise."""
    world = int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)
    if world <= 1 or "devices" in trainer or "strategy" in trainer:
        return {}
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE") or world)
    return {"devices": per_node, "num_nodes": max(world // per_node, 1), "strategy": "ddp"}


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
    kwargs.update(_launched_processes(config.trainer))
    kwargs.update(config.trainer)
    if kwargs.get("precision") == "auto":
        kwargs["precision"] = auto_precision()
    return kwargs


def world_size(config: Config) -> int:
    """How many processes the config's DDP training runs on (devices × nodes); 1 without DDP."""
    kwargs = trainer_kwargs(config)
    if "ddp" not in str(kwargs.get("strategy", "")):
        return 1
    devices = kwargs.get("devices", 1)
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif str(devices).isdigit() and int(devices) > 0:
        count = int(devices)
    else:  # "auto" or -1: every GPU there is
        count = max(torch.cuda.device_count(), 1)
    return count * int(kwargs.get("num_nodes", 1))


def check_trainer(config: Config) -> None:
    """Trainer settings that cannot work on this machine, stopped before anything is read or written."""
    if trainer_kwargs(config).get("sync_batchnorm") and training_device(config) != "cuda":
        raise ConfigError(
            "field 'trainer.sync_batchnorm': torch's SyncBatchNorm runs on GPUs only and this run trains on "
            "the CPU; leave it out on CPUs (each process then keeps its own BatchNorm statistics)"
        )


def local_processes(config: Config) -> int:
    """How many processes of the config's job run on this machine (the devices of one node; 1 without
    DDP): what the image cache's budget and the loader workers are shared among."""
    return max(world_size(config) // max(int(trainer_kwargs(config).get("num_nodes", 1)), 1), 1)


def device_for(accelerator: Any = "auto") -> str:
    """ "cuda" when `accelerator` allows a GPU and there is one, else "cpu"."""
    return "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"


def training_device(config: Config) -> str:
    """The device the config's trainer settings put training on ("cuda" or "cpu")."""
    return device_for(trainer_kwargs(config).get("accelerator"))


def device_label(config: Config) -> str:
    """The training device for the log: the GPU's name, or the accelerator the config names."""
    accelerator = trainer_kwargs(config).get("accelerator")
    if device_for(accelerator) == "cuda":
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return str(accelerator) if accelerator != "auto" else "cpu"


def autocast_dtype(precision: Any) -> torch.dtype | None:
    """The autocast dtype of a Lightning precision setting (None: full precision)."""
    text = str(precision)
    if text.startswith("bf16"):
        return torch.bfloat16
    if text.startswith("16"):
        return torch.float16
    return None


def eval_trainer(config: Config) -> L.Trainer:
    """A quiet Trainer for evaluation only: no logger, checkpoints, progress bar or summary."""
    kwargs = trainer_kwargs(config)
    kwargs.update(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    return L.Trainer(**kwargs)
