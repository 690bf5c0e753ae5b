"""Stage(freeze=...): freezing by module-name pattern or by a fraction of the backbone's layers, in
training, the range test and a resumed run; Lion from timm's optimizers."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import timm
import timm.optim
import torch
from conftest import tiny_config

from mlic import ConfigError, Stage
from mlic.models.build import backbone_layers, head_parameter_names
from mlic.train.prepare import prepare
from mlic.train.stages import run

REPO = Path(__file__).resolve().parents[2]


def start_and_end(config) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The model's state (parameters and BatchNorm buffers) before training and after it."""
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    prepared = prepare(config)  # the weights a run starts from: same seed, same prior-initialised head
    before = {k: v.clone() for k, v in prepared.module.model.state_dict().items()}
    exp_dir = run(config).exp_dir
    state = torch.load(exp_dir / "model.last.pth", map_location="cpu")["state_dict"]
    model.load_state_dict(state)
    return before, state


def changed(before: dict, after: dict, key: str) -> bool:
    return not torch.equal(before[key], after[key])


def test_patterns_freeze_the_named_modules_and_their_batchnorm_statistics(dataset: Path):
    config = tiny_config(dataset, "patterns", stages=[Stage("full", epochs=2, freeze=["conv1", "layer1.*"])])
    before, after = start_and_end(config)
    named = [k for k in after if k.startswith(("conv1.", "layer1."))]
    assert named and not [k for k in named if changed(before, after, k)], "a frozen module changed"
    assert changed(before, after, "layer1.0.bn1.weight") is False
    assert changed(before, after, "layer1.0.bn1.running_mean") is False  # model.freeze_bn: stats kept too
    assert changed(before, after, "bn1.weight") and changed(before, after, "bn1.running_mean")
    assert changed(before, after, "layer4.0.conv2.weight") and changed(before, after, "fc.weight")


def test_a_fraction_freezes_the_first_layers_from_the_input_side(dataset: Path):
    config = tiny_config(dataset, "fraction", stages=[Stage("full", epochs=1, freeze=0.5)])
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    layers = backbone_layers(model)
    first, rest = layers[: len(layers) // 2], layers[len(layers) // 2 :]
    before, after = start_and_end(config)
    assert not [k for k in after if k.rsplit(".", 1)[0] in first and changed(before, after, k)]
    weights = [f"{layer}.weight" for layer in rest]
    assert all(changed(before, after, k) for k in weights), "a layer past the frozen half did not train"


def test_the_range_test_and_the_optimizer_see_only_the_trainable_parameters(dataset: Path):
    config = tiny_config(dataset, "find", stages=[Stage("full", epochs=1, lr="find", freeze=["layer1.*"])])
    prepared = prepare(config)
    module = prepared.module
    module.set_stage(config.stages[0])
    trained = {id(p) for g in module.build_optimizer().param_groups for p in g["params"]}
    for name, p in module.model.named_parameters():
        assert (id(p) in trained) == (not name.startswith("layer1.")), name
    before, after = start_and_end(tiny_config(dataset, "find2", stages=config.stages))
    assert not [k for k in after if k.startswith("layer1.") and changed(before, after, k)]
    assert (Path("experiments/find2/lr_finder.csv")).is_file()


class _Cut(L.Callback):
    def on_train_epoch_end(self, trainer, module) -> None:
        if trainer.current_epoch == 0:
            raise RuntimeError("power cut")


def test_a_resumed_stage_keeps_its_modules_frozen(dataset: Path):
    stages = [Stage("full", epochs=2, freeze=["layer1.*", "conv1"])]
    config = tiny_config(dataset, "resume_freeze", stages=stages, callbacks=[_Cut()])
    before = {k: v.clone() for k, v in prepare(config).module.model.state_dict().items()}
    with pytest.raises(RuntimeError, match="power cut"):
        run(config)
    config.callbacks = []
    exp_dir = run(config, resume=True).exp_dir
    assert pd.read_csv(exp_dir / "metrics.csv")["epoch"].tolist() == [1, 2]
    after = torch.load(exp_dir / "model.last.pth", map_location="cpu")["state_dict"]
    assert not [k for k in after if k.startswith(("layer1.", "conv1.")) and changed(before, after, k)]
    assert changed(before, after, "layer2.0.conv1.weight")


@pytest.mark.parametrize(
    ("freeze", "message"),
    [
        (["layer9.*"], "pattern 'layer9.*' matches no parameter"),
        (1.5, "between 0 and 1"),
        (["*"], "freezes every parameter"),
    ],
)
def test_a_bad_freeze_stops_before_training(dataset: Path, freeze, message: str):
    stages = [Stage("head", epochs=1, freeze_backbone=True), Stage("full", epochs=1, freeze=freeze)]
    with pytest.raises(
        ConfigError, match=r"stages\.full\.freeze.*" + message.replace("*", r"\*").replace(".", r"\.")
    ):
        prepare(tiny_config(dataset, "bad", stages=stages))
    assert not Path("experiments/bad").exists()


def test_train_py_names_the_field_of_a_bad_pattern(dataset: Path, tmp_path: Path):
    config = tmp_path / "bad_freeze.py"
    config.write_text(
        "from mlic import Config, Data, Model, Stage\n"
        f"config = Config(experiment_name='bad_freeze', data=Data(root={str(dataset)!r}, img_size=(32, 32), "
        "num_workers=0), model=Model(name='test_resnet', pretrained=False), "
        "stages=[Stage('full', epochs=1, freeze=['layers.1'])], trainer=dict(accelerator='cpu'))\n"
    )
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "stages.full.freeze" in result.stderr and "'layers.1'" in result.stderr
    assert "Traceback" not in result.stderr


def test_lion_from_timm_trains_with_discriminative_lrs(dataset: Path):
    config = tiny_config(dataset, "lion", stages=[Stage("full", epochs=2, lr=3e-4, backbone_lr_scale=0.1)])
    config.optimizer = partial(timm.optim.Lion, lr=1e-4, weight_decay=1e-2)
    exp_dir = run(config).exp_dir
    rows = pd.read_csv(exp_dir / "metrics.csv")
    assert rows["lr_backbone"].max() == pytest.approx(rows["lr_head"].max() * 0.1)
    assert rows["train/loss"].iloc[-1] < rows["train/loss"].iloc[0]


def test_head_parameters_are_never_in_the_backbone_layers():
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    head = {n.rsplit(".", 1)[0] for n in head_parameter_names(model)}
    assert not head & set(backbone_layers(model))
