"""Model(compile=...): torch.compile for training and evaluation, with nothing else changed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import timm
import torch
from conftest import tiny_config

from mlic import Stage
from mlic.train.stages import run


def test_compiled_training_matches_eager_and_saves_plain_weights(dataset: Path):
    graphs = []

    def backend(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(graph)
        return graph.forward  # runs the captured graph as it is: the numbers must equal eager's

    stages = [Stage("head", epochs=1, freeze_backbone=True), Stage("full", epochs=1)]
    eager = run(tiny_config(dataset, name="eager", stages=stages)).exp_dir
    config = tiny_config(dataset, name="compiled", stages=stages)
    config.model.compile = {"backend": backend}
    compiled = run(config).exp_dir

    assert graphs, "torch.compile never captured the model"
    a = pd.read_csv(eager / "metrics.csv")
    b = pd.read_csv(compiled / "metrics.csv")
    for column in ("train/loss", "valid/loss", "valid/map"):
        assert b[column].tolist() == a[column].tolist() or (b[column] - a[column]).abs().max() < 1e-5, column
    state = torch.load(compiled / "model.best.pth", map_location="cpu")["state_dict"]
    assert not any("_orig_mod" in k for k in state), "checkpoint keys carry torch.compile's wrapper"
    timm.create_model("test_resnet", pretrained=False, num_classes=3).load_state_dict(state)
