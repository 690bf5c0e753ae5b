"""Checkpoint averaging: exact means, integer buffers, one checkpoint resident at a time, refusals."""

from __future__ import annotations

import gc
import weakref

import pytest
import timm
import torch

from mlic import SWA, CheckpointError, ConfigError
from mlic.models.weights import load_weights
from mlic.train.swa import average_checkpoints, reestimate_bn, select_checkpoints


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


@pytest.mark.parametrize("k", [2, 8, 16])
def test_only_one_checkpoint_is_resident_at_a_time_whatever_k(k):
    alive: list[weakref.ref] = []
    peak = 0

    def load(seed):
        nonlocal peak
        gc.collect()
        peak = max(peak, sum(ref() is not None for ref in alive))
        state = _state(seed)
        alive.append(weakref.ref(state["fc.weight"]))
        return state

    average_checkpoints(list(range(k)), load=load)
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


# ------------------------------------------------------------------------------------- BatchNorm


def _bn_net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 5, 3),
        torch.nn.BatchNorm2d(5),
    )


def test_update_bn_gives_the_statistics_computed_directly_on_the_same_data():
    net = _bn_net()
    x = torch.randn(16, 3, 10, 10) * 3 + 1
    for bn in (net[1], net[4]):  # stale statistics, as averaging leaves them
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(9.0)
    net.eval()
    assert reestimate_bn(net, [(x, torch.zeros(16, 3))])  # (images, targets) batches, as our loaders give

    with torch.no_grad():
        h1 = net[0](x)
        mean1, var1 = h1.mean((0, 2, 3)), h1.var((0, 2, 3), unbiased=True)
        normed = (h1 - mean1[None, :, None, None]) / torch.sqrt(
            h1.var((0, 2, 3), unbiased=False)[None, :, None, None] + net[1].eps
        )
        h2 = net[3](
            torch.relu(normed * net[1].weight[None, :, None, None] + net[1].bias[None, :, None, None])
        )
        mean2, var2 = h2.mean((0, 2, 3)), h2.var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(net[1].running_mean, mean1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net[1].running_var, var1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net[4].running_mean, mean2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net[4].running_var, var2, rtol=1e-4, atol=1e-5)
    assert net[1].num_batches_tracked.dtype == torch.int64 and int(net[1].num_batches_tracked) == 1
    assert net[1].momentum == 0.1 and not net.training  # update_bn restores both


def test_update_bn_over_several_batches_averages_them():
    net = _bn_net()
    x = torch.randn(24, 3, 10, 10) * 2 - 1
    reestimate_bn(net, [(x[i : i + 8], None) for i in (0, 8, 16)])
    with torch.no_grad():
        h1 = net[0](x)
    torch.testing.assert_close(net[1].running_mean, h1.mean((0, 2, 3)), rtol=1e-5, atol=1e-5)
    assert int(net[1].num_batches_tracked) == 3


def test_a_model_without_batchnorm_skips_re_estimation():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert not reestimate_bn(net, [(torch.randn(2, 3, 8, 8), None)])
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


# ------------------------------------------------------------------------------------- selection


def _fake_checkpoints(folder, specs):
    """Lightning-like checkpoints with what train.py records: stage, epoch and metrics."""
    folder.mkdir(parents=True, exist_ok=True)
    for stage, epoch, score in specs:
        torch.save(
            {
                "state_dict": {"model.w": torch.full((2,), float(epoch))},
                "mlic": {
                    "stage": stage,
                    "epoch": epoch,
                    "metrics": {"valid/map": score, "valid/loss": -score},
                },
            },
            folder / f"{stage}-epoch{epoch - 1:02d}.ckpt",
        )
    return folder


def test_top_k_picks_the_best_of_the_stage_in_epoch_order(tmp_path):
    folder = _fake_checkpoints(
        tmp_path / "checkpoints",
        [("head", 1, 0.99), ("full", 1, 0.5), ("full", 2, 0.8), ("full", 3, 0.6), ("full", 4, 0.7)],
    )
    chosen = select_checkpoints(folder, "full", "top", 3, "valid/map", "max")
    assert [i.epoch for i in chosen] == [2, 3, 4]
    lowest_loss = select_checkpoints(folder, "full", "top", 2, "valid/loss", "min")
    assert [i.epoch for i in lowest_loss] == [2, 4]


def test_last_k_picks_the_latest_epochs(tmp_path):
    folder = _fake_checkpoints(tmp_path / "c", [("full", e, 1.0 / e) for e in range(1, 6)])
    assert [i.epoch for i in select_checkpoints(folder, "full", "last", 3, "valid/map", "max")] == [3, 4, 5]


def test_fewer_than_two_checkpoints_of_the_stage_says_what_exists(tmp_path):
    folder = _fake_checkpoints(tmp_path / "c", [("head", 1, 0.4), ("head", 2, 0.5), ("full", 1, 0.6)])
    with pytest.raises(CheckpointError) as e:
        select_checkpoints(folder, "full", "top", 5, "valid/map", "max")
    assert "1 of stage 'full' (full-epoch00.ckpt)" in str(e.value)
    assert "2 of other stages (head-epoch00.ckpt, head-epoch01.ckpt)" in str(e.value)
    with pytest.raises(CheckpointError, match="no checkpoints"):
        select_checkpoints(tmp_path / "nothing", "full", "top", 5, "valid/map", "max")


def test_swa_settings_are_checked():
    from conftest import tiny_config

    from mlic.config.validation import validate

    for swa, message in (
        (SWA(top_k=3, last_k=3), "sets both top_k and last_k"),
        (SWA(top_k=1), "'swa.top_k' must be at least 2"),
        (SWA(stage="ful"), "did you mean 'full'"),
        (SWA(ema_decay=1.5), "'swa.ema_decay' must be between 0 and 1"),
    ):
        with pytest.raises(ConfigError, match=message):
            validate(tiny_config("data", swa=swa))


def test_the_last_checkpoint_kept_for_resume_is_not_a_candidate_of_its_own(tmp_path):
    folder = _fake_checkpoints(tmp_path / "c", [("full", e, 0.1 * e) for e in range(1, 4)])
    torch.save(
        {
            "state_dict": {"model.w": torch.zeros(2)},
            "mlic": {"stage": "full", "epoch": 3, "metrics": {"valid/map": 0.3}},
        },
        folder / "full-last.ckpt",
    )
    chosen = select_checkpoints(folder, "full", "top", 5, "valid/map", "max")
    assert [i.path.name for i in chosen] == ["full-epoch00.ckpt", "full-epoch01.ckpt", "full-epoch02.ckpt"]
