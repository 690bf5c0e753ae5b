"""Config(tta="hflip"): each image predicted as it is and mirrored, the probabilities averaged; the final
evaluation, --test, predict.py and every export predict the same way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_dataset, tiny_config
from torch import nn

from mlic import Stage
from mlic.data.images import read_rgb, resize
from mlic.deploy.export import export_experiment, run_exported
from mlic.deploy.predict import predict_paths
from mlic.evaluate.evaluation import evaluate_split, open_experiment
from mlic.models.tta import averaged, flip_views
from mlic.train.stages import run


@pytest.mark.parametrize("softmax", [False, True])
def test_the_averaged_logits_give_the_mean_of_the_two_probabilities(softmax: bool):
    a = torch.tensor([[3.0, -40.0, 0.5], [60.0, 2.0, -1.0]])
    b = torch.tensor([[-1.0, 40.0, 0.5], [55.0, -2.0, 4.0]])
    act = (lambda z: z.softmax(1)) if softmax else torch.sigmoid
    mean = (act(a.double()) + act(b.double())) / 2
    torch.testing.assert_close(act(averaged(a.double(), b.double(), softmax)), mean)
    assert torch.isfinite(averaged(a, b, softmax)).all()  # no clipping to 0 or 1, no infinities


def test_a_mask_of_the_mirror_image_is_mirrored_back():
    conv = nn.Conv2d(3, 2, 1)  # a 1×1 convolution treats every pixel alike: mirroring commutes with it
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(
        flip_views(conv, x, softmax=True, pixelwise=True), torch.log_softmax(conv(x), 1)
    )
    # without mirroring back, the two masks would disagree
    wrong = averaged(conv(x), conv(torch.flip(x, [-1])), softmax=True)
    assert not torch.allclose(wrong, torch.log_softmax(conv(x), 1), atol=1e-3)


@pytest.fixture(scope="module")
def flipped(tmp_path_factory) -> tuple[Path, object]:
    base = tmp_path_factory.mktemp("tta")
    dataset = make_dataset(base / "data", n_train=48, n_valid=16, n_test=16)
    config = tiny_config(dataset, "tta", stages=[Stage("full", epochs=2, lr=3e-3)])
    config.output_dir = str(base / "experiments")
    config.tta = "hflip"
    outcome = run(config)
    return outcome, config


def test_the_model_file_predicts_with_its_views_everywhere(flipped):
    outcome, config = flipped
    exp_dir = outcome.exp_dir
    trained = open_experiment(exp_dir)
    mf = trained.model_file
    assert mf.tta == "hflip"
    paths = sorted(Path(config.data.root, "Images").glob("*.jpg"))[:6]
    thresholds, _ = trained.thresholds()
    predicted = predict_paths(mf, paths, thresholds, device="cpu")[mf.classes].to_numpy()
    transform = mf.prep.transform()
    x = torch.stack([transform(read_rgb(str(p))) for p in paths])
    with torch.no_grad():
        by_hand = (torch.sigmoid(mf.model(x)) + torch.sigmoid(mf.model(torch.flip(x, [-1])))) / 2
    np.testing.assert_allclose(predicted, by_hand.numpy(), atol=1e-5)

    export_experiment(exp_dir, formats=("torchscript", "export"), images=Path(config.data.root, "Images"))
    images = torch.from_numpy(
        np.stack([resize(read_rgb(str(p)), mf.prep.img_size, mf.prep.interpolation) for p in paths])
    )
    for fmt, name in (("torchscript", "model.ts"), ("export", "model.pt2")):
        np.testing.assert_allclose(run_exported(fmt, exp_dir / name, images), predicted, atol=1e-5)
    assert json.loads((exp_dir / "export.json").read_text())["tta"] == "hflip"

    # --test evaluates as the run's final evaluation did: with the views
    assert evaluate_split(config, "test").results["test"]["map"] == pytest.approx(
        outcome.results["test"]["map"]
    )
