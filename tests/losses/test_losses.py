"""Losses against independent references (torch, torchvision, timm): values and gradients w.r.t. logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.loss import AsymmetricLossMultiLabel
from torchvision.ops import sigmoid_focal_loss

from mlic import Config, Data, losses
from mlic.config.validation import validate

TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=g) * 3
    targets = (torch.rand(16, 5, generator=g) > 0.6).float()
    return logits, targets


def value_and_grad(loss_fn, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = logits.clone().requires_grad_(True)
    loss = loss_fn(x, targets)
    loss.backward()
    return loss.detach(), x.grad


def assert_matches(ours, reference, logits: torch.Tensor, targets: torch.Tensor) -> None:
    value, grad = value_and_grad(ours, logits, targets)
    ref_value, ref_grad = value_and_grad(reference, logits, targets)
    torch.testing.assert_close(value, ref_value, **TOL)
    torch.testing.assert_close(grad, ref_grad, **TOL)


# ------------------------------------------------------------------------------------------------ focal


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("alpha", [0.25, None])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_matches_torchvision_sigmoid_focal_loss(batch, reduction, alpha, gamma):
    def reference(x, t):
        return sigmoid_focal_loss(
            x, t, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction=reduction
        )

    assert_matches(losses.FocalLoss(alpha=alpha, gamma=gamma, reduction=reduction), reference, *batch)


def test_focal_with_negative_alpha_has_no_alpha_weighting(batch):
    assert_matches(losses.FocalLoss(alpha=-1), losses.FocalLoss(alpha=None), *batch)


def test_focal_reduction_none_keeps_the_elementwise_loss(batch):
    logits, targets = batch
    ours = losses.FocalLoss(reduction="none")(logits, targets)
    torch.testing.assert_close(ours, sigmoid_focal_loss(logits, targets, reduction="none"), **TOL)


# ------------------------------------------------------------------------------------------------ asymmetric

ASL_SETTINGS = [(0.0, 4.0, 0.05), (1.0, 4.0, 0.0), (2.0, 1.0, 0.2)]


@pytest.mark.parametrize(("gamma_pos", "gamma_neg", "clip"), ASL_SETTINGS)
def test_asymmetric_sum_equals_timm(batch, gamma_pos, gamma_neg, clip):
    timm_loss = AsymmetricLossMultiLabel(
        gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip, eps=1e-8, reduction="sum"
    )
    ours = losses.AsymmetricLoss(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, reduction="sum")
    assert_matches(ours, timm_loss, *batch)


@pytest.mark.parametrize(("gamma_pos", "gamma_neg", "clip"), ASL_SETTINGS)
def test_asymmetric_mean_equals_timm_sum_over_number_of_elements(batch, gamma_pos, gamma_neg, clip):
    timm_loss = AsymmetricLossMultiLabel(
        gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip, eps=1e-8, reduction="sum"
    )
    ours = losses.AsymmetricLoss(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip)
    assert_matches(ours, lambda x, t: timm_loss(x, t) / t.numel(), *batch)


# ------------------------------------------------------------------------------------------------ smoothing


def test_label_smoothing_equals_bce_on_smoothed_targets(batch):
    def reference(x, t):
        return F.binary_cross_entropy_with_logits(x, t * 0.8 + 0.1)

    assert_matches(losses.LabelSmoothingBCE(smoothing=0.2), reference, *batch)


def test_label_smoothing_zero_equals_plain_bce(batch):
    assert_matches(losses.LabelSmoothingBCE(smoothing=0.0), F.binary_cross_entropy_with_logits, *batch)


# ------------------------------------------------------------------------------------------------ pos_weight


def test_bce_without_pos_weight_equals_torch_bce(batch):
    assert_matches(losses.BCEWithLogitsLoss(), torch.nn.BCEWithLogitsLoss(), *batch)


def test_bce_pos_weight_list_equals_torch_pos_weight(batch):
    weights = [0.5, 1.0, 2.0, 3.5, 10.0]
    reference = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weights))
    assert_matches(losses.BCEWithLogitsLoss(pos_weight=weights), reference, *batch)


# Class 0: 1 positive of 4 (3.0), 1: 2 of 4 (1.0), 2: 4 of 4 (0.0), 3: no positives (1.0), 4: 1 of 4 but
# with max_pos_weight=2.5 (clipped from 3.0).
KNOWN_TARGETS = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 0, 1], [0, 0, 1, 0, 0], [0, 0, 1, 0, 0]])


def test_bce_auto_pos_weight_is_negatives_over_positives_clipped_and_one_without_positives():
    loss = losses.BCEWithLogitsLoss(pos_weight="auto", max_pos_weight=2.5)
    loss.setup(KNOWN_TARGETS)
    torch.testing.assert_close(loss.pos_weight, torch.tensor([2.5, 1.0, 0.0, 1.0, 2.5]))


def test_bce_auto_pos_weight_after_setup_equals_torch_with_hand_computed_weights(batch):
    pos = KNOWN_TARGETS.sum(axis=0)
    by_hand = np.where(pos > 0, (len(KNOWN_TARGETS) - pos) / np.maximum(pos, 1), 1.0)
    loss = losses.BCEWithLogitsLoss(pos_weight="auto")
    loss.setup(KNOWN_TARGETS)
    torch.testing.assert_close(loss.pos_weight, torch.tensor(by_hand, dtype=torch.float32))
    reference = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(by_hand, dtype=torch.float32))
    assert_matches(loss, reference, *batch)


def test_bce_auto_pos_weight_before_setup_raises_runtime_error(batch):
    with pytest.raises(RuntimeError, match="setup"):
        losses.BCEWithLogitsLoss(pos_weight="auto")(*batch)


def test_bce_pos_weight_of_wrong_length_raises_value_error_naming_both_lengths(batch):
    with pytest.raises(ValueError, match="3 values .* 5 classes"):
        losses.BCEWithLogitsLoss(pos_weight=[1.0, 2.0, 3.0])(*batch)


def test_bce_setup_leaves_a_fixed_pos_weight_alone():
    loss = losses.BCEWithLogitsLoss(pos_weight=[2.0] * 5)
    loss.setup(KNOWN_TARGETS)
    torch.testing.assert_close(loss.pos_weight, torch.full((5,), 2.0))


def test_bce_pos_weight_stays_out_of_the_state_dict():
    loss = losses.BCEWithLogitsLoss(pos_weight="auto")
    loss.setup(KNOWN_TARGETS)
    assert loss.state_dict() == {}


# ------------------------------------------------------------------------------------------------ all losses


def all_losses() -> list[torch.nn.Module]:
    auto = losses.BCEWithLogitsLoss(pos_weight="auto")
    auto.setup(KNOWN_TARGETS)
    return [
        losses.BCEWithLogitsLoss(),
        losses.BCEWithLogitsLoss(pos_weight=[1.0, 2.0, 3.0, 4.0, 5.0]),
        auto,
        losses.FocalLoss(),
        losses.FocalLoss(alpha=None, gamma=0.5),
        losses.LabelSmoothingBCE(),
        losses.AsymmetricLoss(),
        losses.AsymmetricLoss(gamma_pos=1.0, gamma_neg=4.0, clip=0.0),
        losses.AsymmetricLoss(gamma_pos=0.5, gamma_neg=0.5, clip=0.0),
    ]


RANDOM = torch.randn(4, 5, generator=torch.Generator().manual_seed(1)) * 3
EXTREME = torch.tensor([1e4, -1e4, 0.0, 1e4, -1e4]).repeat(4, 1)
EDGE_CASES = {
    "all-zero targets": (RANDOM, torch.zeros(4, 5)),
    "all-one targets": (RANDOM, torch.ones(4, 5)),
    "extreme logits": (EXTREME, torch.tensor([[1.0, 0, 1, 0, 1], [0, 1, 0, 1, 0]]).repeat(2, 1)),
}


@pytest.mark.parametrize("case", EDGE_CASES)
@pytest.mark.parametrize("loss_fn", all_losses(), ids=repr)
def test_loss_and_gradient_are_finite_in_edge_cases(loss_fn, case):
    value, grad = value_and_grad(loss_fn, *EDGE_CASES[case])
    assert value.shape == ()
    assert torch.isfinite(value)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("loss_fn", all_losses(), ids=repr)
def test_loss_computes_in_float32_from_half_logits(loss_fn, batch):
    logits, targets = batch
    value = loss_fn(logits.half(), targets.half())
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss_fn(logits.half().float(), targets), **TOL)


@pytest.mark.parametrize("loss_fn", all_losses(), ids=repr)
def test_loss_is_accepted_by_config_validation(loss_fn):
    validate(Config(experiment_name="x", data=Data(root="."), loss=loss_fn))


@pytest.mark.parametrize(
    "make",
    [
        lambda: losses.BCEWithLogitsLoss(reduction="batchmean"),
        lambda: losses.BCEWithLogitsLoss(pos_weight="balanced"),
        lambda: losses.BCEWithLogitsLoss(pos_weight=[1.0, -2.0]),
        lambda: losses.BCEWithLogitsLoss(pos_weight="auto", max_pos_weight=0.0),
        lambda: losses.FocalLoss(gamma=-1.0),
        lambda: losses.FocalLoss(alpha=1.5),
        lambda: losses.FocalLoss(reduction="avg"),
        lambda: losses.LabelSmoothingBCE(smoothing=1.0),
        lambda: losses.LabelSmoothingBCE(smoothing=-0.1),
        lambda: losses.AsymmetricLoss(gamma_pos=-1.0),
        lambda: losses.AsymmetricLoss(gamma_neg=-0.5),
        lambda: losses.AsymmetricLoss(clip=1.0),
        lambda: losses.AsymmetricLoss(clip=-0.1),
        lambda: losses.AsymmetricLoss(eps=0.0),
        lambda: losses.AsymmetricLoss(reduction="mean "),
    ],
)
def test_invalid_arguments_raise_value_error(make):
    with pytest.raises(ValueError, match="got"):
        make()
