"""The warning about an image in two splits: by id where label tables name one image file per id, by the
files' bytes where the splits are folders, whose file names are only names within each folder."""

from __future__ import annotations

import shutil

import pandas as pd
from conftest import make_dataset, make_folders, make_masks

from mlic import Data
from mlic.data.loaders import split_warnings
from mlic.data.tables import read_splits


def _in_both(notes: list[str]) -> list[str]:
    return [n for n in notes if "in both" in n]


def _folder_data(root) -> Data:
    return Data(root=str(root), train="train", valid="valid", test=None)


def test_an_id_in_two_label_tables_is_warned_as_the_same_image(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=8, n_valid=4, n_test=4)
    valid = pd.read_csv(data / "valid_df.csv")
    valid.loc[0, "Id"] = "m0002"  # a train id: the one file Images/m0002.jpg
    valid.to_csv(data / "valid_df.csv", index=False)
    notes = _in_both(split_warnings(read_splits(Data(root=str(data)))))
    assert notes == [
        "1 id(s) are in both train and valid (first: m0002): the valid metrics score images the model "
        "may have trained on"
    ]


def test_segmentation_folders_with_a_file_name_in_two_splits_for_other_images_are_not_warned(tmp_path):
    root = make_masks(tmp_path / "data", counts=(("train", 4), ("valid", 2)))
    for folder in ("images", "masks"):  # valid's first image takes a train name; its picture stays its own
        (root / "valid" / folder / "valid000.png").rename(root / "valid" / folder / "train000.png")
    tables = read_splits(_folder_data(root), task="segmentation")
    assert "train000" in tables["train"].ids and "train000" in tables["valid"].ids
    assert _in_both(split_warnings(tables)) == []


def test_segmentation_folders_with_the_same_image_in_two_splits_are_warned(tmp_path):
    root = make_masks(tmp_path / "data", counts=(("train", 4), ("valid", 2)))
    shutil.copy(root / "train" / "images" / "train002.png", root / "valid" / "images" / "valid001.png")
    notes = _in_both(split_warnings(read_splits(_folder_data(root), task="segmentation")))
    assert notes == [
        "1 image(s) are in both train and valid (first: train002 in train, identical to valid001 in valid): "
        "the valid metrics score images the model may have trained on"
    ]


def test_class_folders_with_a_file_name_in_two_splits_for_other_images_are_not_warned(tmp_path):
    root = make_folders(tmp_path / "data", counts=(("train", 6), ("valid", 3)))
    (root / "valid" / "left" / "valid000.png").rename(root / "valid" / "left" / "train000.png")
    tables = read_splits(_folder_data(root), task="single_label")
    assert "left/train000.png" in tables["train"].ids and "left/train000.png" in tables["valid"].ids
    assert _in_both(split_warnings(tables)) == []


def test_class_folders_with_the_same_image_in_two_splits_are_warned(tmp_path):
    root = make_folders(tmp_path / "data", counts=(("train", 6), ("valid", 3)))
    shutil.copy(root / "train" / "left" / "train003.png", root / "valid" / "left" / "train003.png")
    notes = _in_both(split_warnings(read_splits(_folder_data(root), task="single_label")))
    assert notes == [
        "1 image(s) are in both train and valid (first: left/train003.png): the valid metrics score "
        "images the model may have trained on"
    ]
