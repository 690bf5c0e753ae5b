"""Any weights file as bare weights: `read_state_dict` (a safe, weights-only load with one clear sentence
for a file that is not one), `load_weights`, and `state_differences`, the one check of whether two sets of
weights fit each other."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mlic.utils.errors import CheckpointError


def read_state_dict(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model weights, everything else in the file) of a mlic model file, a Lightning checkpoint or a
    bare state dict, on the CPU; `what` names the file in the error a user gets."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same sentence
        raise CheckpointError(unreadable(what, path, e)) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, meta = obj, {}
    else:
        raise CheckpointError(f"{what} {path} holds no state_dict")
    # Lightning checkpoints prefix the model's keys with the attribute that holds it.
    # (a loss with buffers of its own adds keys like `loss_fn.pos_weight` beside the model's)
    model_keys = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    if model_keys and all(k.startswith(("model.", "loss_fn.")) for k in state):
        state = model_keys
    return state, meta


def unreadable(what: str, path: Path, e: Exception) -> str:
    """Why a file could not be loaded, in one sentence (torch's refusal of pickled code included)."""
    if "Unsupported global" in str(e):  # torch's weights-only loader refused a pickled object
        return (
            f"{what} {path} holds Python objects beyond tensors, that is code loading would run; mlic "
            f"loads weights only and does not load it: save its state_dict (torch.save(model.state_dict(), ...))"
        )
    if "Weights only load failed" in str(e):
        return f"{what} {path} cannot be read as torch weights (not a torch file, or a damaged one)"
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{what} {path} cannot be read as torch weights ({type(e).__name__}: {first})"


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model weights of a Lightning checkpoint or a mlic model file, on the CPU."""
    state, _ = read_state_dict(Path(path), "checkpoint")
    return state


@dataclass
class StateDifferences:
    """How a state dict differs from a reference one (tensor names; `ignore`d names left out)."""

    reshaped: list[str] = field(default_factory=list)  # in both, with another shape
    missing: list[str] = field(default_factory=list)  # in the reference only
    unexpected: list[str] = field(default_factory=list)  # in the state only
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.reshaped or self.missing or self.unexpected)

    def first(self) -> str:
        """The first difference, as a phrase: `first differing tensor: x` (names differ) or `x has shape
        (3,), not (4,)`."""
        if self.missing or self.unexpected:
            return f"first differing tensor: {(self.missing or self.unexpected)[0]}"
        name = self.reshaped[0]
        got, want = self.shapes[name]
        return f"{name} has shape {got}, not {want}"


def state_differences(
    reference: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], ignore: set[str] = frozenset()
) -> StateDifferences:
    """Compare `state` with `reference` tensor by tensor: the one compatibility check used to load a
    checkpoint into a model and to average checkpoints."""
    out = StateDifferences()
    for key, value in state.items():
        if key in ignore:
            continue
        if key not in reference:
            out.unexpected.append(key)
        elif tuple(value.shape) != tuple(reference[key].shape):
            out.reshaped.append(key)
            out.shapes[key] = (tuple(value.shape), tuple(reference[key].shape))
    out.missing = [k for k in reference if k not in state and k not in ignore]
    return out
