"""MixUp and CutMix of multi-hot batches (Config(mixing=Mixing(...)))."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_config

from mlic import ConfigError, Mixing, Stage
from mlic.config.validation import validate
from mlic.data.mixing import mix_batch, mixed_loss
from mlic.losses.classification import AsymmetricLoss
from mlic.train.stages import run


def batch(n: int = 8, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g)
    y = (torch.rand(n, 4, generator=g) < 0.5).float()
    return x, y


def test_mixup_blends_images_and_bce_equals_the_loss_on_mixed_targets():
    x, y = batch()
    mixed, perm, lam = mix_batch(x, Mixing("mixup", p=1.0, alpha=0.4), np.random.default_rng(3))
    assert perm is not None and 0.0 < lam < 1.0
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[perm])
    logits = torch.randn_like(y)
    bce = torch.nn.BCEWithLogitsLoss()
    torch.testing.assert_close(
        mixed_loss(bce, logits, y, perm, lam), bce(logits, lam * y + (1 - lam) * y[perm])
    )


def test_cutmix_pastes_one_box_and_lambda_is_the_unpasted_share():
    x, y = batch(size=32)
    for seed in range(20):
        mixed, perm, lam = mix_batch(x, Mixing("cutmix", p=1.0, alpha=1.0), np.random.default_rng(seed))
        from_other = (mixed != x).any(dim=1)  # (n, h, w): pixels that changed
        pasted = (mixed == x[perm]).all(dim=1) & ~(mixed == x).all(dim=1)
        assert torch.equal(from_other, pasted), "a changed pixel does not come from the paired image"
        # every image gets the same box, and λ is 1 minus its area share
        i = int((perm != torch.arange(len(x))).nonzero()[0])  # an image paired with another
        box = (mixed[i] != x[i]).any(dim=0)
        assert lam == pytest.approx(1 - box.float().mean().item(), abs=1e-6)
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        if len(rows):  # the pasted pixels form one rectangle
            assert box.sum().item() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


def test_p_is_the_share_of_mixed_batches():
    x, _ = batch()
    rng = np.random.default_rng(0)
    mixed = sum(mix_batch(x, Mixing("both", p=0.3), rng)[1] is not None for _ in range(2000))
    assert 0.26 < mixed / 2000 < 0.34
    assert all(mix_batch(x, Mixing(p=0.0), rng)[1] is None for _ in range(100))


def test_mixed_loss_keeps_zero_one_targets_for_other_losses():
    _, y = batch()
    perm = torch.randperm(len(y))
    logits = torch.randn_like(y)
    asl = AsymmetricLoss()
    expected = 0.7 * asl(logits, y) + 0.3 * asl(logits, y[perm])
    torch.testing.assert_close(mixed_loss(asl, logits, y, perm, 0.7), expected)


@pytest.mark.parametrize(
    ("mixing", "field"),
    [
        (Mixing(p=1.5), "mixing.p"),
        (Mixing(alpha=0.0), "mixing.alpha"),
        (Mixing(strategy="mixdown"), "mixing"),
    ],
)
def test_bad_mixing_is_one_sentence_naming_the_field(dataset: Path, mixing: Mixing, field: str):
    config = tiny_config(dataset)
    config.mixing = mixing
    with pytest.raises(ConfigError, match=field):
        validate(config)


def test_training_with_mixing_changes_training_not_evaluation(dataset: Path):
    stages = [Stage("full", epochs=2)]
    plain = run(tiny_config(dataset, name="plain", stages=stages)).exp_dir
    config = tiny_config(dataset, name="mixed", stages=stages)
    config.mixing = Mixing("both", p=1.0, alpha=0.4)
    mixed = run(config).exp_dir
    again = tiny_config(dataset, name="mixed_again", stages=stages)
    again.mixing = Mixing("both", p=1.0, alpha=0.4)
    repeat = run(again).exp_dir
    a, b, c = (pd.read_csv(d / "metrics.csv") for d in (plain, mixed, repeat))
    assert not np.allclose(a["train/loss"], b["train/loss"]), "mixing did not change the training batches"
    # the same seed mixes the same way: the run repeats exactly
    np.testing.assert_allclose(b["train/loss"], c["train/loss"], rtol=1e-6)
    np.testing.assert_allclose(b["valid/loss"], c["valid/loss"], rtol=1e-6)
