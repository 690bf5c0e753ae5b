"""Any weights file as bare weights: `read_state_dict` (a safe, weights-only load; a file it cannot read
gets one sentence from `unreadable`: pickled code, text, empty, truncated), `load_weights`, and
`state_differences`, the one check of whether two sets of weights fit each other."""

from __future__ import annotations

import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mlic.utils.errors import CheckpointError
from mlic.utils.io import os_error_cause

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format is a zip archive
LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)  # how older torch files start
LFS_POINTER = "version https://git-lfs"  # what a clone without Git LFS holds instead of the weights
# what a legacy (non-zip) torch file imports to rebuild tensors and state dicts
TORCH_OWN = ("torch.", "collections.OrderedDict")


def read_state_dict(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model weights, everything else in the file) of a mlic model file, a Lightning checkpoint or a
    bare state dict, on the CPU; `what` names the file in the error a user gets."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        with warnings.catch_warnings():  # a pickle not written by torch.save: its error says all there is
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every unreadable file gets a sentence saying why
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
    """Why a file could not be loaded, in one sentence. It is told from the exception's type and the file
    itself (read again as bytes, nothing run), never from torch's wording, which changes between releases."""
    path = Path(path)
    name = f"{what} {path}"
    code = pickled_code(path) if isinstance(e, pickle.UnpicklingError) else []
    if code:  # torch's weights-only unpickler refused to import these: loading would have run them
        shown = ", ".join(code[:3]) + (f" and {len(code) - 3} more" if len(code) > 3 else "")
        return (
            f"{name} holds Python objects beyond tensors, that is code loading would run ({shown}); mlic "
            f"loads weights only and does not load it: save its state_dict (torch.save(model.state_dict(), ...))"
        )
    what_is_wrong = _damage(path, _head(path), e)
    if what_is_wrong is not None:
        return f"{name} cannot be read: {what_is_wrong}"
    if isinstance(e, pickle.UnpicklingError):
        return f"{name} cannot be read as torch weights (not a torch file, or a damaged one)"
    if isinstance(e, OSError):
        return f"{name} cannot be read: {os_error_cause(e)}"
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{name} cannot be read as torch weights ({type(e).__name__}: {first})"


def _damage(path: Path, head: bytes | None, e: Exception) -> str | None:
    """What is wrong with a file torch could not read, seen from its first bytes: empty, text, truncated."""
    if head is None:  # it cannot be opened either: the OSError says why
        return None
    if head == b"":
        return "it is empty (0 bytes); copy or download it again"
    text = _leading_text(head)
    if text is not None:
        if text.startswith(LFS_POINTER):
            return "it is a Git LFS pointer, not the weights it points to; fetch them with git lfs pull"
        return f"it is not a torch file (it starts with text: {text[:40]!r})"
    again = "; copy or download it again"
    if (head.startswith(ZIP_MAGIC) and not zipfile.is_zipfile(path)) or isinstance(e, EOFError):
        # a zip archive's directory is at its end: without it, the file was cut short
        return f"it is truncated, the file ends before its data does ({path.stat().st_size} bytes){again}"
    if head.startswith(LEGACY_MAGIC):
        return f"it is a torch file of the old (pre-1.6) format, truncated or damaged{again}"
    return None


def _head(path: Path, n: int = 512) -> bytes | None:
    """The first `n` bytes of a file (None when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return None


def _leading_text(head: bytes) -> str | None:
    """The first line of `head` when the file starts with text (UTF-8, printable), else None."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not merely a character cut at the end of `head`
            return None
        text = head[: error.start].decode("utf-8")
    if not text.strip() or not all(c.isprintable() or c in "\r\n\t" for c in text):
        return None
    return text.strip().splitlines()[0]


def pickled_code(path: Path) -> list[str]:
    """The Python objects (`module.name`) a file's pickle would import beyond the tensors torch's
    weights-only loader allows: read statically, so nothing is imported or run. Empty when there are none
    or the file is no pickle."""
    try:
        if zipfile.is_zipfile(path):  # torch.save's format: torch reads its own allow-list
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        return sorted(g for g in _stream_globals(path) if not g.startswith(TORCH_OWN))
    except (OSError, ValueError, RuntimeError, KeyError):
        return []


def _stream_globals(path: Path, max_pickles: int = 8) -> set[str]:
    """`module.name` of each global the pickles at the start of a file import (a legacy torch file is
    several pickles, then raw tensor bytes, where reading stops)."""
    found: set[str] = set()
    with open(path, "rb") as f:
        for _ in range(max_pickles):
            pushed: list[Any] = []  # what each opcode pushed, None where not a string (enough for globals)
            memo: dict[int, Any] = {}
            try:
                for op, arg, _ in pickletools.genops(f):
                    if op.name == "GLOBAL" or op.name == "INST":
                        found.add(arg.replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(pushed) >= 2:
                        found.add(f"{pushed[-2]}.{pushed[-1]}")
                    elif op.name == "MEMOIZE":
                        memo[len(memo)] = pushed[-1] if pushed else None
                    elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                        memo[arg] = pushed[-1] if pushed else None
                    elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                        pushed.append(memo.get(arg))
                    elif op.name not in ("PROTO", "FRAME", "STOP"):
                        pushed.append(arg if isinstance(arg, str) else None)
            except ValueError:  # not a pickle (any more): the tensors' bytes, or no pickle at all
                break
    return found


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
