"""Checkpoint averaging: exact means, integer buffers, one checkpoint resident at a time, refusals."""

from __future__ import annotations

import gc
import weakref

import pytest
import timm
import torch

from mlic import CheckpointError
from mlic.swa import average_checkpoints, load_weights


def _state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", num_classes=3)
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            value.fill_(seed * 10)
    return state


def test_average_of_two_checkpoints_is_their_arithmetic_mean(tmp_path):
    a, b = _state(1), _state(2)
    torch.save({"state_dict": a}, tmp_path / "a.pth")
    torch.save({"state_dict": {f"model.{k}": v for k, v in b.items()}}, tmp_path / "b.ckpt")  # Lightning keys
    avg = average_checkpoints([tmp_path / "a.pth", tmp_path / "b.ckpt"])
    for key, value in avg.items():
        if value.is_floating_point():
            expected = ((a[key].double() + b[key].double()) / 2).to(value.dtype)
            assert torch.equal(value, expected), key
            assert value.dtype == a[key].dtype


def test_integer_buffers_are_taken_from_the_last_checkpoint_not_averaged():
    states = {"a": _state(1), "b": _state(2), "c": _state(3)}
    avg = average_checkpoints(["a", "b", "c"], load=lambda p: states[p])
    counters = [k for k in avg if k.endswith("num_batches_tracked")]
    assert counters and all(avg[k].dtype == torch.int64 and int(avg[k]) == 30 for k in counters)


def test_only_one_checkpoint_is_resident_at_a_time():
    alive: list[weakref.ref] = []
    peak = 0

    def load(seed):
        nonlocal peak
        gc.collect()
        peak = max(peak, sum(ref() is not None for ref in alive))
        state = _state(seed)
        alive.append(weakref.ref(state["fc.weight"]))
        return state

    average_checkpoints(list(range(8)), load=load)
    assert peak == 0  # when a checkpoint is loaded, no earlier one is still held


def test_checkpoints_of_another_architecture_are_refused():
    other = timm.create_model("test_efficientnet", num_classes=3).state_dict()
    states = {"a": _state(1), "b": other}
    with pytest.raises(CheckpointError, match="holds other tensors"):
        average_checkpoints(["a", "b"], load=lambda p: states[p])


def test_checkpoints_of_another_class_list_are_refused():
    b = _state(2)
    b["fc.weight"], b["fc.bias"] = b["fc.weight"][:2], b["fc.bias"][:2]
    states = {"a": _state(1), "b": b}
    with pytest.raises(CheckpointError, match="fc.weight has shape"):
        average_checkpoints(["a", "b"], load=lambda p: states[p])


def test_fewer_than_two_checkpoints_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="at least two checkpoints, got 1"):
        average_checkpoints([tmp_path / "only.ckpt"])


def test_load_weights_reads_lightning_checkpoints(tmp_path):
    state = _state(1)
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "x.ckpt")
    assert load_weights(tmp_path / "x.ckpt").keys() == state.keys()
