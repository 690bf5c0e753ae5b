"""Semantic segmentation (`task="segmentation"`, `task="multilabel_segmentation"`): masks read and
checked, IoU and Dice against torchmetrics and smp, the staged run end to end (encoder frozen → full,
report, --test, SWA, export, predict with masks) and the mistakes a user makes."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SEG_CLASSES, assert_user_error, make_masks, make_sample, seg_config, train_cli
from PIL import Image

from mlic import Data, Model, Stage
from mlic.data.images import ImageTransform
from mlic.data.tables import read_splits
from mlic.deploy.export import export_experiment, run_exported
from mlic.deploy.predict import predict_paths
from mlic.evaluate.evaluation import evaluate_split
from mlic.experiment.checkpoints import load_model_file
from mlic.losses.segmentation import DiceLoss
from mlic.metrics.segmentation import confusion_counts, iou_dice
from mlic.tasks import get_task
from mlic.train.stages import run
from mlic.utils.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("seg")
    root = make_masks(base / "data")
    config = seg_config(root)
    config.output_dir = str(base / "experiments")
    return run(config), config, root


# ------------------------------------------------------------------------------------------ metrics


def _random_batch(seed: int, n: int = 6, c: int = 4, size: int = 24):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, size, size, generator=g)
    labels = torch.randint(0, c, (n, size, size), generator=g)
    labels[:, :4] = 0  # uneven classes
    return logits, labels, torch.nn.functional.one_hot(labels, c).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_and_dice_agree_with_torchmetrics_and_smp(seed):
    from segmentation_models_pytorch import metrics as smp_metrics
    from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

    logits, labels, onehot = _random_batch(seed)
    c = logits.shape[1]
    # counted per image and batch, summed afterwards: as a split is scored
    counts = torch.cat(
        [confusion_counts(logits[i : i + 2], onehot[i : i + 2], False, 0.5) for i in (0, 2, 4)]
    )
    iou, dice = iou_dice(counts.numpy())
    predicted = logits.argmax(1)
    jaccard = MulticlassJaccardIndex(num_classes=c, average=None)(predicted, labels)
    f1 = MulticlassF1Score(num_classes=c, average=None, multidim_average="global")(predicted, labels)
    assert iou == pytest.approx(jaccard.numpy(), abs=1e-6)
    assert dice == pytest.approx(f1.numpy(), abs=1e-6)
    tp, fp, fn, tn = smp_metrics.get_stats(predicted, labels, mode="multiclass", num_classes=c)
    smp_iou = smp_metrics.iou_score(tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0), reduction="none")
    assert iou == pytest.approx(smp_iou.numpy(), abs=1e-6)
    task = get_task("segmentation")
    assert task.metrics(counts.numpy(), None, 0.5)["iou"] == pytest.approx(float(jaccard.mean()), abs=1e-6)


def test_multilabel_iou_agrees_with_torchmetrics():
    from torchmetrics.classification import MultilabelJaccardIndex

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 3, 16, 16, generator=g)
    targets = (torch.rand(5, 3, 16, 16, generator=g) > 0.7).float()
    iou, _ = iou_dice(confusion_counts(logits, targets, True, 0.5).numpy())
    # torchmetrics' multilabel input is (N, C, ...): every pixel of every image counts
    expected = MultilabelJaccardIndex(num_labels=3, average=None, threshold=0.5)(
        torch.sigmoid(logits), targets.long()
    )
    assert iou == pytest.approx(expected.numpy(), abs=1e-6)


def test_a_class_absent_and_never_predicted_is_left_out_of_the_mean():
    counts = np.array([[5, 0, 0, 1, 0, 0, 2, 0, 0]], dtype=float)  # tp, fp, fn of 3 classes
    iou, dice = iou_dice(counts)
    assert iou[0] == pytest.approx(5 / 8) and np.isnan(iou[1]) and np.isnan(iou[2])
    assert get_task("segmentation").metrics(counts, None, 0.5)["iou"] == pytest.approx(5 / 8)


def test_dice_loss_is_zero_for_a_perfect_prediction_and_high_for_the_opposite():
    _, _, onehot = _random_batch(0, c=3)
    loss = DiceLoss("multiclass", smooth=0.0)
    assert float(loss(onehot * 40 - 20, onehot)) == pytest.approx(0.0, abs=1e-4)
    assert float(loss(20 - onehot * 40, onehot)) > 0.9


# --------------------------------------------------------------------------------------- reading masks


def test_masks_are_read_with_their_classes_and_pixel_shares(tmp_path):
    root = make_masks(tmp_path / "data", counts=(("train", 4), ("valid", 2)))
    tables = read_splits(Data(root=str(root), train="train", valid="valid", test=None), task="segmentation")
    train = tables["train"]
    assert train.classes == ["0", "1", "2"]  # without data.classes: the values found, by value
    mask = np.array(Image.open(root / "train" / "masks" / "train000.png"))
    expected = np.bincount(mask.ravel(), minlength=3) / mask.size
    assert train.targets[0] == pytest.approx(expected)
    assert train.masks[0].tolist() == mask.tolist()


def test_dict_classes_map_names_to_mask_values(tmp_path):
    root = make_masks(tmp_path / "data", counts=(("train", 3), ("valid", 2)))
    for path in root.glob("*/masks/*.png"):  # values 0/1/2 → 0/128/255
        mask = np.array(Image.open(path))
        Image.fromarray(np.array([0, 128, 255], dtype=np.uint8)[mask]).save(path)
    classes = {"background": 0, "square": 128, "bar": 255}
    tables = read_splits(
        Data(root=str(root), train="train", valid="valid", test=None, classes=classes), task="segmentation"
    )
    assert tables["train"].classes == list(classes)
    assert set(np.unique(tables["train"].masks[0]).tolist()) == {0, 1, 2}


def test_image_and_mask_move_together_through_the_augmentations():
    import albumentations as A

    rng = np.random.default_rng(0)
    image, mask = make_sample(rng)
    unit = (1 / 255,) * 3  # x is the pixel value itself
    transform = ImageTransform((32, 32), (0, 0, 0), unit, A.Compose([A.HorizontalFlip(p=1.0)]))
    x, out = transform.pair(image, mask)
    assert out.tolist() == mask[:, ::-1].tolist()
    assert x.numpy().transpose(1, 2, 0).round().astype(np.uint8).tolist() == image[:, ::-1].tolist()
    x, out = ImageTransform((16, 48), (0, 0, 0), (1, 1, 1)).pair(image, mask)
    assert x.shape == (3, 16, 48) and out.shape == (16, 48) and set(np.unique(out)) <= {0, 1, 2}


# ----------------------------------------------------------------------------------------- training


def test_training_learns_and_writes_every_artifact(trained):
    outcome, config, _ = trained
    exp_dir = outcome.exp_dir
    metrics = pd.read_csv(exp_dir / "metrics.csv")
    assert metrics["stage"].tolist() == ["decoder"] * 2 + ["full"] * 6
    assert {"valid/iou", "valid/dice", "valid/loss"} <= set(metrics.columns)
    # chance: everything background scores IoU (background share, 0, 0) → about 0.27
    assert outcome.results["test"]["iou"] > 0.5, outcome.results
    mf = load_model_file(exp_dir / "model.best.pth")
    assert mf.task == "segmentation" and mf.classes == SEG_CLASSES and mf.model_name == "Unet"
    last = load_model_file(exp_dir / "model.last.pth")
    assert last.model.state_dict().keys() == mf.model.state_dict().keys()
    for ckpt in (exp_dir / "checkpoints").glob("*.ckpt"):  # every checkpoint kept loads into the model
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
        last.model.load_state_dict(
            {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        )
    report = (exp_dir / "report.md").read_text()
    assert "| class | train pixels %" not in report and "test IoU" in report and "square" in report
    assert not (exp_dir / "thresholds.json").exists()


def test_the_decoder_stage_keeps_the_encoder_frozen(trained):
    outcome, _, _ = trained
    checkpoints = sorted((outcome.exp_dir / "checkpoints").glob("decoder-*.ckpt"))
    first = torch.load(checkpoints[0], map_location="cpu", weights_only=False)["state_dict"]
    init = load_model_file(outcome.exp_dir / "model.best.pth").model.state_dict()
    encoder = [k for k in first if k.startswith("model.encoder.") and k.endswith("conv1.weight")]
    decoder = [k for k in first if k.startswith("model.decoder.") and k.endswith("weight")]
    assert encoder and decoder
    # the full stage moved the encoder: the best (full) model's encoder differs from the decoder stage's
    assert any(not torch.equal(first[k], init[k.removeprefix("model.")]) for k in encoder)
    decoder_ckpts = [torch.load(p, map_location="cpu", weights_only=False)["state_dict"] for p in checkpoints]
    assert len(decoder_ckpts) > 1  # its epochs and decoder-last
    a, b = decoder_ckpts[0], decoder_ckpts[-1]  # within the decoder stage the encoder did not move
    assert all(torch.equal(a[k], b[k]) for k in encoder)
    assert any(not torch.equal(a[k], b[k]) for k in decoder)


def test_test_flag_reproduces_the_reported_metrics(trained):
    outcome, config, _ = trained
    again = evaluate_split(config, "test")
    for key, value in outcome.results["test"].items():
        assert again.results["test"][key] == pytest.approx(value, abs=1e-6), key


def test_export_returns_per_pixel_probabilities_that_match_eager(trained):
    outcome, _, root = trained
    written = export_experiment(
        outcome.exp_dir, formats=["torchscript", "export"], images=root / "valid" / "images"
    )
    mf = load_model_file(outcome.exp_dir / "model.best.pth")
    images = torch.randint(0, 255, (3, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        x = (
            images.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mf.prep.mean).view(1, 3, 1, 1)
        ) / torch.tensor(mf.prep.std).view(1, 3, 1, 1)
        eager = torch.softmax(mf.model(x), 1).numpy()
    for fmt in ("torchscript", "export"):
        got = run_exported(fmt, written[fmt], images)
        assert got.shape == (3, 3, 32, 32)
        assert got.sum(1) == pytest.approx(np.ones((3, 32, 32)), abs=1e-5)
        assert got == pytest.approx(eager, abs=1e-4)


def test_predict_writes_pixel_shares_and_masks_at_the_image_size(trained, tmp_path):
    outcome, _, root = trained
    mf = load_model_file(outcome.exp_dir / "model.best.pth")
    big = tmp_path / "big.png"  # another size than the model's: its mask comes back at its own size
    Image.open(root / "test" / "images" / "test000.png").resize((48, 40)).save(big)
    paths = sorted((root / "test" / "images").glob("*.png"))[:3] + [big, root / "missing.png"]
    masks = tmp_path / "masks"
    df = predict_paths(
        mf, paths, np.full(3, 0.5), batch_size=2, device="cpu", show_progress=False, masks_dir=masks
    )
    assert list(df.columns) == ["image", *SEG_CLASSES, "predicted", "error"]
    ok = df[df["error"] == ""]
    assert len(ok) == 4 and df["error"].iloc[-1]
    assert ok[SEG_CLASSES].sum(1).to_numpy() == pytest.approx(np.ones(4))
    written = np.array(Image.open(masks / "test000.png"))
    assert written.shape == (32, 32) and set(np.unique(written)) <= {0, 1, 2}
    assert np.array(Image.open(masks / "big.png")).shape == (40, 48)
    assert ok["background"].iloc[0] == pytest.approx(float((written == 0).mean()))
    truth = np.array(Image.open(root / "test" / "masks" / "test000.png"))
    assert (written == truth).mean() > 0.8


def test_swa_averages_segmentation_checkpoints(trained):
    from mlic.train.swa import run_swa

    outcome, config, _ = trained
    result = run_swa(config, k=2)
    mf = load_model_file(result.path)
    assert mf.task == "segmentation" and mf.classes == SEG_CLASSES


def test_multilabel_masks_train_with_a_sigmoid_per_class(tmp_path):
    root = make_masks(tmp_path / "data", counts=(("train", 16), ("valid", 6), ("test", 6)), multilabel=True)
    config = seg_config(
        root,
        "multi",
        task="multilabel_segmentation",
        stages=[Stage("decoder", epochs=1, freeze_backbone=True, lr=1e-2), Stage("full", epochs=3, lr=1e-2)],
    )
    config.output_dir = str(tmp_path / "experiments")
    outcome = run(config)
    mf = load_model_file(outcome.exp_dir / "model.best.pth")
    assert mf.classes == ["bar", "square"]  # the class folders, sorted
    assert outcome.results["test"]["iou"] > 0.2
    again = evaluate_split(config, "test")
    assert again.results["test"]["iou"] == pytest.approx(outcome.results["test"]["iou"], abs=1e-6)


# ------------------------------------------------------------------------------------------ mistakes


CONFIG = """
from mlic import Config, Data, Model, env_path
config = Config(experiment_name="s", task="segmentation", epochs=1,
                data=Data(root=env_path(), train="train", valid="valid", test=None, img_size={size},
                          classes={classes!r}),
                model=Model(name={arch!r}, encoder={encoder!r}, pretrained=False, kwargs={kwargs!r}),
                trainer=dict(accelerator="cpu"))
"""


@pytest.mark.parametrize(
    "case, expected",
    [
        (
            "mask of another size",
            r"mask .*train000.png is 20×24 pixels but its image .*train000.png is 32×32",
        ),
        ("value not a class", r"mask .*valid001.png has the value 7, which is not a class"),
        ("missing mask", r"mask .*train002.png does not exist; every image needs its mask"),
        ("colour mask", r"mask .*train001.png is a colour \(RGB\) image"),
        (
            "size the model cannot divide",
            r"field 'data.img_size': FPN .* cannot take 30×30 images .*divisible by 32",
        ),
        ("no masks folder", r"segmentation split .*valid needs the subfolders images/ and masks/"),
    ],
)
def test_user_mistakes_are_one_sentence_and_nothing_is_trained(tmp_path, case, expected):
    root = make_masks(tmp_path / "data", counts=(("train", 4), ("valid", 2)))
    size = (32, 32)
    if case == "mask of another size":
        Image.fromarray(np.zeros((24, 20), dtype=np.uint8)).save(root / "train" / "masks" / "train000.png")
    if case == "value not a class":
        Image.fromarray(np.full((32, 32), 7, dtype=np.uint8)).save(root / "valid" / "masks" / "valid001.png")
    if case == "missing mask":
        (root / "train" / "masks" / "train002.png").unlink()
    if case == "colour mask":
        colour = np.zeros((32, 32, 3), dtype=np.uint8)
        colour[..., 0] = 1
        Image.fromarray(colour).save(root / "train" / "masks" / "train001.png")
    model = ("Unet", "tu-test_resnet", {"encoder_depth": 3, "decoder_channels": [16, 8, 8]})
    if case == "size the model cannot divide":  # FPN needs sides divisible by 32
        size, model = (30, 30), ("FPN", "resnet18", {})
    if case == "no masks folder":
        (root / "valid" / "masks").rename(root / "valid" / "labels")
    arch, encoder, kwargs = model
    result = train_cli(
        tmp_path, CONFIG.format(size=size, classes=SEG_CLASSES, arch=arch, encoder=encoder, kwargs=kwargs)
    )
    stderr = assert_user_error(result)
    assert re.search(expected, stderr), stderr
    assert not (tmp_path / "experiments" / "s" / "metrics.csv").exists()


def test_config_mistakes_name_the_field(tmp_path):
    from mlic.config.loading import load_config
    from mlic.models.build import create_model

    (tmp_path / "c.py").write_text(
        "from mlic import Config, Data\n"
        "config = Config(experiment_name='x', data=Data(root='.', classes={'a': 0, 'b': 1}))\n"
    )
    with pytest.raises(ConfigError, match=r"'data.classes' maps names to mask values.*multi_label"):
        load_config(tmp_path / "c.py")
    with pytest.raises(ConfigError, match=r"smp has no architecture|no architecture 'Unett'"):
        create_model(Model(name="Unett", pretrained=False), 2, "segmentation")
    with pytest.raises(
        ConfigError, match=r"field 'model.encoder': segmentation-models-pytorch has no encoder 'nope'"
    ):
        create_model(Model(name="Unet", encoder="nope", pretrained=False), 2, "segmentation")
    with pytest.raises(ConfigError, match=r"'model.encoder' is for segmentation models"):
        create_model(Model(name="test_resnet", encoder="resnet18", pretrained=False), 2, "single_label")
    (tmp_path / "m.py").write_text(
        "from mlic import Config, Data, Mixing\n"
        "config = Config(experiment_name='x', task='segmentation', mixing=Mixing(), data=Data(root='.'))\n"
    )
    with pytest.raises(
        ConfigError, match=r"'mixing' \(MixUp/CutMix\) .* not available for task 'segmentation'"
    ):
        load_config(tmp_path / "m.py")


def test_a_local_encoder_weights_file_is_loaded_into_the_encoder(tmp_path):
    import timm

    from mlic.models.build import create_model

    backbone = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    path = tmp_path / "backbone.pth"
    torch.save(backbone.state_dict(), path)
    model = create_model(
        Model(
            name="Unet",
            encoder="tu-test_resnet",
            pretrained=str(path),
            kwargs={"encoder_depth": 3, "decoder_channels": [16, 8, 8]},
        ),
        3,
        "segmentation",
    )
    own = model.encoder.state_dict()
    shared = [k for k in backbone.state_dict() if f"model.{k}" in own]
    assert shared and all(torch.equal(own[f"model.{k}"], backbone.state_dict()[k]) for k in shared)
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"does not fit the encoder"):
        create_model(
            Model(name="Unet", encoder="tu-test_resnet", pretrained=str(tmp_path / "other.pth")),
            3,
            "segmentation",
        )
