"""Checkpoint averaging (SWA over saved checkpoints): streaming, float64 accumulation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from mlic.errors import CheckpointError
from mlic.models import _read_state_dict


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
