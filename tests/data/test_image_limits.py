"""`Data(max_image_pixels=...)`: an image (or mask) whose header says it has more pixels is refused with
one sentence before anything decodes it, so a decompression bomb (a small file that decodes to
gigabytes) costs a header read, not minutes of decoding and a crawl through training."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import (
    assert_nothing_trained,
    assert_user_error,
    make_dataset,
    make_masks,
    tiny_config,
    train_cli,
    write_bomb,
)

from mlic import Data, DataError, Stage
from mlic.data.images import ImageTransform, read_rgb
from mlic.data.loaders import make_loader
from mlic.data.tables import read_splits
from mlic.train.stages import run

BOMB_CONFIG = """from mlic import Config, Data, Model, Stage, env_path

config = Config(
    experiment_name="bomb",
    data=Data(root=env_path(), img_size=(32, 32), batch_size=8, num_workers=0),
    model=Model(name="test_resnet", pretrained=False),
    stages=[Stage("full", epochs=1)],
    trainer=dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False),
    seed=0,
)
"""


def test_a_decompression_bomb_in_the_train_split_stops_train_py_with_one_sentence(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=16, n_valid=8, n_test=8)
    bomb = write_bomb(data / "Images" / "m0003.jpg")  # a PNG under a poster's name
    assert bomb.stat().st_size < 100_000
    result = train_cli(tmp_path, BOMB_CONFIG)
    line = assert_user_error(result)
    assert f"image {bomb} is 20000×20000 = 400,000,000 pixels" in line
    assert "over data.max_image_pixels (100,000,000)" in line
    assert "raise data.max_image_pixels" in line
    assert_nothing_trained(tmp_path, "bomb")


def test_the_pixel_limit_is_read_from_the_header_without_decoding(tmp_path):
    bomb = write_bomb(tmp_path / "poster.jpg")
    with pytest.raises(DataError, match=r"poster\.jpg is 20000×20000 = 400,000,000 pixels, over data"):
        read_rgb(str(bomb))  # what predict.py, the report and the loaders read images with


def test_several_images_over_the_limit_are_counted_in_the_sentence(dataset):
    for name in ("m0001.jpg", "m0002.jpg"):
        write_bomb(dataset / "Images" / name, 12000, 9000)
    with pytest.raises(DataError) as info:
        read_splits(Data(root=str(dataset)))
    assert "m0001.jpg is 12000×9000 = 108,000,000 pixels" in str(info.value)
    assert f"1 more listed in {dataset / 'train_df.csv'} are over it too" in str(info.value)


def test_an_image_at_the_limit_trains_and_one_pixel_over_it_is_refused(dataset):
    config = tiny_config(dataset, "at_the_limit", stages=[Stage("full", epochs=1)])
    config.data = replace(config.data, max_image_pixels=32 * 32)  # the images are 32×32
    exp_dir = run(config).exp_dir
    assert (exp_dir / "model.best.pth").is_file()
    with pytest.raises(DataError, match=r"is 32×32 = 1,024 pixels, over data.max_image_pixels \(1,023\)"):
        read_splits(replace(config.data, max_image_pixels=32 * 32 - 1))


def test_a_limit_of_none_reads_every_image(dataset):
    write_bomb(dataset / "Images" / "m0001.jpg")
    tables = read_splits(Data(root=str(dataset), max_image_pixels=None))  # headers only: nothing decoded
    assert "m0001" in tables["train"].ids


def test_the_loaders_read_with_the_configs_limit(dataset):
    cfg = Data(root=str(dataset), img_size=(32, 32), batch_size=4, num_workers=0, max_image_pixels=None)
    tables = read_splits(cfg)
    transform = ImageTransform((32, 32), (0.5,) * 3, (0.5,) * 3)
    x, _ = make_loader(tables["valid"], transform, cfg, train=False).dataset[0]
    assert tuple(x.shape) == (3, 32, 32)
    strict = replace(cfg, max_image_pixels=100)
    with pytest.raises(DataError, match="over data.max_image_pixels"):
        make_loader(tables["valid"], transform, strict, train=False).dataset[0]


# ------------------------------------------------------------------------------------------ segmentation


def test_a_bomb_among_segmentation_images_is_one_sentence(tmp_path):
    root = make_masks(tmp_path / "seg", counts=(("train", 4), ("valid", 2)))
    bomb = write_bomb(root / "train" / "images" / "train001.png")
    with pytest.raises(DataError) as info:
        read_splits(Data(root=str(root), train="train", valid="valid", test=None), task="segmentation")
    assert str(info.value).startswith(f"image {bomb} is 20000×20000 = 400,000,000 pixels")


def test_a_bomb_among_segmentation_masks_is_one_sentence_naming_the_mask(tmp_path):
    root = make_masks(tmp_path / "seg", counts=(("train", 4), ("valid", 2)))
    bomb = write_bomb(root / "valid" / "masks" / "valid001.png")
    data = Data(root=str(root), train="train", valid="valid", test=None, classes=["bg", "square", "bar"])
    with pytest.raises(DataError) as info:
        read_splits(data, task="segmentation")
    assert str(info.value).startswith(f"mask {bomb} is 20000×20000 = 400,000,000 pixels")


def test_segmentation_images_and_masks_at_the_limit_are_read(tmp_path):
    root = make_masks(tmp_path / "seg", counts=(("train", 4), ("valid", 2)))  # 32×32 images and masks
    data = Data(root=str(root), train="train", valid="valid", test=None, max_image_pixels=32 * 32)
    tables = read_splits(data, task="segmentation")
    assert len(tables["train"]) == 4 and tables["train"].masks[0].shape == (32, 32)
