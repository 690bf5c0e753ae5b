"""Prior-initialised heads: a new head starts at the class frequencies of the train split, so the first
loss is the prior loss; `Model(prior_init=False)` and heads loaded from checkpoints are left alone."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import tiny_config
from torch import nn

from mlic import Stage, losses
from mlic.data.tables import read_splits
from mlic.metrics.classification import class_priors, prior_logits
from mlic.models.build import classifier_biases, prior_init_head
from mlic.train.prepare import prepare
from mlic.train.stages import run


def _entropy(p: np.ndarray) -> float:
    return float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))


def _known_table(n: int = 40) -> np.ndarray:
    """Four classes with frequencies 1/40, 1/4, 1/2 and 9/10."""
    targets = np.zeros((n, 4), dtype=np.float32)
    targets[:1, 0] = 1
    targets[:10, 1] = 1
    targets[5:25, 2] = 1
    targets[:36, 3] = 1
    return targets


def prior_loss(targets: np.ndarray) -> float:
    """Binary cross-entropy over `targets` of predicting each class's frequency for every image."""
    return _entropy(targets.mean(axis=0, dtype=np.float64))


def test_a_class_without_positives_gets_finite_log_odds():
    targets = _known_table()
    targets[:, 0] = 0
    priors = class_priors(targets)
    assert 0 < priors[0] < 1e-1 and np.isfinite(np.log(priors / (1 - priors))).all()


@pytest.mark.parametrize("name", ["test_resnet", "test_vit", "test_convnext"])
def test_with_the_heads_weights_zeroed_the_loss_over_the_table_is_its_prior_loss(name):
    targets = _known_table()
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=4).eval()
    assert prior_init_head(model, prior_logits(targets))
    with torch.no_grad():
        model.get_classifier().weight.zero_()
        logits = model(torch.randn(len(targets), 3, 32, 32))
    loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(targets))
    assert float(loss) == pytest.approx(_entropy(np.array([1 / 40, 1 / 4, 1 / 2, 9 / 10])), abs=1e-5)


def test_a_new_run_starts_from_the_train_splits_prior(dataset, caplog):
    config = tiny_config(dataset, stages=[Stage("full", epochs=1)])
    with caplog.at_level(logging.INFO, logger="mlic"):
        module = prepare(config).module
    train = read_splits(config.data)["train"].targets
    freq = train.mean(axis=0, dtype=np.float64)
    assert torch.allclose(
        classifier_biases(module.model)[0].double(), torch.from_numpy(np.log(freq / (1 - freq))), atol=1e-6
    )
    assert f"prior loss {prior_loss(train):.4f}" in caplog.text


def test_prior_init_false_keeps_timms_initialisation(dataset):
    config = tiny_config(dataset, stages=[Stage("full", epochs=1)])
    config.model.prior_init = False
    torch.manual_seed(0)
    bias = classifier_biases(prepare(config).module.model)[0]
    freq = read_splits(config.data)["train"].targets.mean(axis=0)
    assert not np.allclose(bias.detach().numpy(), np.log(freq / (1 - freq)), atol=1e-3)


def test_a_head_loaded_from_a_checkpoint_is_left_as_it_is(dataset):
    first = run(tiny_config(dataset, "first", stages=[Stage("full", epochs=1)])).exp_dir
    saved = torch.load(first / "model.best.pth", weights_only=True)["state_dict"]
    config = tiny_config(dataset, "second", stages=[Stage("full", epochs=1)])
    config.model.checkpoint = str(first / "model.best.pth")
    bias = classifier_biases(prepare(config).module.model)[0]
    assert torch.equal(bias.detach(), saved["fc.bias"])


def test_the_first_batch_loss_is_logged_beside_the_prior_loss(dataset, caplog):
    config = tiny_config(dataset, stages=[Stage("head", epochs=1, freeze_backbone=True)])
    with caplog.at_level(logging.INFO, logger="mlic"):
        run(config)
    train = pd.read_csv(dataset / "train_df.csv").drop(columns="Id").to_numpy()
    lines = [r.getMessage() for r in caplog.records if "first-batch loss" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith("stage head: first-batch loss ")
    assert lines[0].endswith(f"(prior loss {prior_loss(train):.4f})")


def test_a_head_recreated_for_other_classes_starts_at_the_priors(dataset, tmp_path):
    first = run(tiny_config(dataset, "first", stages=[Stage("full", epochs=1)])).exp_dir
    other = tmp_path / "other"
    other.mkdir()
    for split in ("train", "valid", "test"):  # two classes instead of three: the head is re-created
        df = pd.read_csv(dataset / f"{split}_df.csv").drop(columns="Drama")
        df.to_csv(other / f"{split}_df.csv", index=False)
    (other / "Images").symlink_to(dataset / "Images")
    config = tiny_config(other, "second", stages=[Stage("full", epochs=1)])
    config.model.checkpoint = str(first / "model.best.pth")
    bias = classifier_biases(prepare(config).module.model)[0]
    expected = prior_logits(read_splits(config.data)["train"].targets)
    assert np.allclose(bias.detach().numpy(), expected, atol=1e-6)


def test_a_checkpoint_without_a_head_leaves_the_new_head_at_the_priors(dataset, tmp_path):
    torch.manual_seed(0)
    backbone = timm.create_model("test_resnet", pretrained=False, num_classes=3).state_dict()
    path = tmp_path / "backbone.pth"
    torch.save({k: v for k, v in backbone.items() if not k.startswith("fc.")}, path)
    config = tiny_config(dataset, stages=[Stage("full", epochs=1)])
    config.model.checkpoint = str(path)
    bias = classifier_biases(prepare(config).module.model)[0]
    expected = prior_logits(read_splits(config.data)["train"].targets)
    assert np.allclose(bias.detach().numpy(), expected, atol=1e-6)


def test_with_pos_weight_auto_the_head_starts_where_the_weighted_loss_is_lowest(dataset, caplog):
    # negatives/positives as pos_weight moves the best constant logit to 0 for every class
    config = tiny_config(
        dataset, stages=[Stage("full", epochs=1)], loss=losses.BCEWithLogitsLoss(pos_weight="auto")
    )
    with caplog.at_level(logging.INFO, logger="mlic"):
        bias = classifier_biases(prepare(config).module.model)[0]
    assert np.allclose(bias.detach().numpy(), 0.0, atol=1e-5)
    train = torch.from_numpy(np.array(read_splits(config.data)["train"].targets))
    expected = float(config.loss(torch.zeros_like(train), train))
    assert f"prior loss {expected:.4f}" in caplog.text


def test_every_head_of_a_two_headed_model_starts_at_the_priors():
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=4)
    logits = prior_logits(_known_table())
    assert prior_init_head(model, logits)
    biases = classifier_biases(model)
    assert len(biases) == 2
    for bias in biases:
        assert np.allclose(bias.detach().numpy(), logits, atol=1e-6)
