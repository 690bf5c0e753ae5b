"""Backbone/head split, freezing (BatchNorm included), weight files."""

from __future__ import annotations

import pytest
import timm
import torch

from mlic import CheckpointError, Model, Stage
from mlic.engine.module import ClassifierModule
from mlic.models.build import create_model, head_parameter_names


def _model(name: str, num_classes: int = 3) -> torch.nn.Module:
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("test_resnet", {"fc.weight", "fc.bias"}),
        ("test_efficientnet", {"classifier.weight", "classifier.bias"}),
        ("test_convnext", {"head.norm.weight", "head.norm.bias", "head.fc.weight", "head.fc.bias"}),
    ],
)
def test_head_is_what_forward_head_uses(name, expected):
    assert head_parameter_names(_model(name)) == expected


def test_vit_tokens_belong_to_the_backbone_and_its_head_norm_to_the_head():
    head = head_parameter_names(_model("test_vit"))
    assert "head.weight" in head
    assert "cls_token" not in head and "pos_embed" not in head
    assert all(not n.startswith("blocks.") for n in head)


def _train_steps(module: ClassifierModule, steps: int = 3) -> None:
    module.train()
    for _ in range(steps):
        module.model(torch.randn(4, 3, 32, 32) * 3 + 1)


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
def test_frozen_backbone_keeps_batchnorm_statistics(name):
    module = ClassifierModule(_model(name), torch.nn.BCEWithLogitsLoss(), None, None, freeze_bn=True)
    module.set_stage(Stage("head", epochs=1, freeze_backbone=True))
    before = {k: v.clone() for k, v in module.model.state_dict().items() if "running" in k}
    _train_steps(module)
    after = module.model.state_dict()
    assert before and all(torch.equal(after[k], v) for k, v in before.items())


def test_freeze_bn_false_lets_batchnorm_statistics_move():
    module = ClassifierModule(
        _model("test_resnet"), torch.nn.BCEWithLogitsLoss(), None, None, freeze_bn=False
    )
    module.set_stage(Stage("head", epochs=1, freeze_backbone=True))
    before = {k: v.clone() for k, v in module.model.state_dict().items() if "running_mean" in k}
    _train_steps(module)
    after = module.model.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in before.items())


def test_unfreezing_puts_batchnorm_back_in_train_mode():
    module = ClassifierModule(_model("test_resnet"), torch.nn.BCEWithLogitsLoss(), None, None)
    module.set_stage(Stage("head", epochs=1, freeze_backbone=True))
    module.train()
    module.set_stage(Stage("full", epochs=1))
    module.train()
    assert all(m.training for m in module.model.modules())
    assert all(p.requires_grad for p in module.model.parameters())


def test_pretrained_file_loads_the_backbone_and_keeps_a_fresh_head(tmp_path):
    source = _model("test_resnet", num_classes=10)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = create_model(Model(name="test_resnet", pretrained=str(path)), num_classes=3)
    state = model.state_dict()
    assert torch.equal(state["conv1.0.weight"], source.state_dict()["conv1.0.weight"])
    assert state["fc.weight"].shape == (3, source.num_features)


def test_unknown_timm_model_name_is_a_config_error():
    from mlic.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="timm has no model 'resnet_18'"):
        create_model(Model(name="resnet_18", pretrained=False), num_classes=3)


def test_a_missing_model_file_says_where_the_previous_run_went(tmp_path):
    from mlic.experiment.checkpoints import resolve_model_file

    exp_dir = tmp_path / "experiments" / "run"
    exp_dir.mkdir(parents=True)
    (tmp_path / "experiments" / "run.20261123-101500").mkdir()
    with pytest.raises(CheckpointError, match=r"it holds no model file .*moved to .*run\.20261123-101500"):
        resolve_model_file(exp_dir)


def test_lightning_checkpoints_with_loss_buffers_load_as_model_weights(tmp_path):
    from mlic.models.weights import load_weights

    model = timm.create_model("test_resnet", num_classes=3)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["loss_fn.pos_weight"] = torch.ones(3)  # torch.nn.BCEWithLogitsLoss(pos_weight=...) saves it
    torch.save({"state_dict": state}, tmp_path / "x.ckpt")
    assert load_weights(tmp_path / "x.ckpt").keys() == model.state_dict().keys()
