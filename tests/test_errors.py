"""Data and checkpoint mistakes stop before training with one sentence naming the file, row and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import (
    CLASSES,
    assert_nothing_trained,
    assert_user_error,
    make_dataset,
    start_cli_cases,
    tiny_config,
)

from mlic import CheckpointError, ConfigError, Data, DataError, Model, losses
from mlic.data.images import read_rgb
from mlic.data.tables import read_splits
from mlic.models.build import create_model, load_checkpoint
from mlic.train.stages import run
from mlic.utils.cli import run_cli

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "configs"


def data_error(data: Data) -> str:
    with pytest.raises(DataError) as info:
        read_splits(data)
    return str(info.value)


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"Id": str})


def write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False)


def set_label(path: Path, index: int, column: str, value) -> None:
    """Set one cell of a label table; `index` counts data rows from 0 (CSV line index + 2)."""
    df = read_csv(path).astype({column: object})
    df.loc[index, column] = value
    write_csv(df, path)


def to_genre_tables(root: Path) -> None:
    """Rewrite every split in layout b: `Id,Genre` with '|'-separated class names."""
    for split in ("train", "valid", "test"):
        df = read_csv(root / f"{split}_df.csv")
        genres = ["|".join(c for c in CLASSES if row[c]) for _, row in df.iterrows()]
        write_csv(pd.DataFrame({"Id": df["Id"], "Genre": genres}), root / f"{split}_df.csv")


def delete_images(root: Path, split: str, count: int) -> list[str]:
    """Delete the images of the first `count` rows of `split`; return their file names."""
    ids = read_csv(root / f"{split}_df.csv")["Id"][:count]
    names = [f"{i}.jpg" for i in ids]
    for name in names:
        (root / "Images" / name).unlink()
    return names


# ------------------------------------------------------------------------------------------ label tables


def test_missing_label_table_is_named(dataset):
    (dataset / "valid_df.csv").unlink()
    message = data_error(tiny_config(dataset).data)
    assert str(dataset / "valid_df.csv") in message
    assert "does not exist" in message


def test_empty_label_table_is_named(dataset):
    (dataset / "train_df.csv").write_bytes(b"")
    message = data_error(tiny_config(dataset).data)
    assert str(dataset / "train_df.csv") in message
    assert "is empty" in message


def test_label_table_with_header_only_says_it_has_no_rows(dataset):
    (dataset / "test_df.csv").write_text("Id," + ",".join(CLASSES) + "\n")
    message = data_error(tiny_config(dataset).data)
    assert str(dataset / "test_df.csv") in message
    assert "no rows" in message


def test_label_table_without_id_column_lists_its_columns(dataset):
    write_csv(read_csv(dataset / "train_df.csv").rename(columns={"Id": "Name"}), dataset / "train_df.csv")
    message = data_error(tiny_config(dataset).data)
    assert str(dataset / "train_df.csv") in message
    assert "no 'Id' column" in message
    assert "Name, Action" in message
    assert "data.id_column" in message


def test_label_table_with_only_ids_says_it_has_no_label_columns(dataset):
    write_csv(read_csv(dataset / "train_df.csv")[["Id"]], dataset / "train_df.csv")
    message = data_error(tiny_config(dataset).data)
    assert str(dataset / "train_df.csv") in message
    assert "no label columns" in message


def test_label_other_than_0_1_names_row_and_column(dataset):
    set_label(dataset / "train_df.csv", 6, "Comedy", "yes")  # data row 6 is CSV line 8
    message = data_error(tiny_config(dataset).data)
    assert str(dataset / "train_df.csv") in message
    assert "row 8, column 'Comedy'" in message
    assert "'yes'" in message


def test_numeric_label_other_than_0_1_shows_the_value_as_written(dataset):
    set_label(dataset / "valid_df.csv", 3, "Drama", 2)
    message = data_error(tiny_config(dataset).data)
    assert "row 5, column 'Drama'" in message
    assert message.endswith("got 2")


def test_genre_names_table_loads_as_multi_hot_targets(dataset):
    onehot = read_csv(dataset / "valid_df.csv")
    to_genre_tables(dataset)
    tables = read_splits(Data(root=str(dataset), label_column="Genre"))
    assert tables["train"].classes == CLASSES
    assert tables["valid"].classes == CLASSES
    np.testing.assert_array_equal(tables["valid"].targets, onehot[CLASSES].to_numpy(dtype=np.float32))
    assert list(tables["valid"].ids) == list(onehot["Id"])


def test_unknown_genre_in_valid_names_genre_and_row(dataset):
    to_genre_tables(dataset)
    set_label(dataset / "valid_df.csv", 3, "Genre", "Action|Western")
    message = data_error(Data(root=str(dataset), label_column="Genre"))
    assert str(dataset / "valid_df.csv") in message
    assert "row 5" in message
    assert "unknown genre 'Western'" in message


def test_valid_with_other_class_columns_than_train_names_them(dataset):
    valid = read_csv(dataset / "valid_df.csv").rename(columns={"Drama": "Horror"})
    write_csv(valid, dataset / "valid_df.csv")
    message = data_error(tiny_config(dataset).data)
    assert str(dataset / "valid_df.csv") in message
    assert "lacks the class column(s) Drama" in message
    assert "Horror" in message


def test_genre_strings_in_one_hot_table_hint_at_label_column(dataset):
    to_genre_tables(dataset)
    set_label(dataset / "train_df.csv", 0, "Genre", "Action|Comedy")
    message = data_error(tiny_config(dataset).data)
    assert "row 2, column 'Genre'" in message
    assert "data.label_column='Genre'" in message


def test_genre_column_hint_does_not_depend_on_the_first_row(dataset):
    to_genre_tables(dataset)
    set_label(dataset / "train_df.csv", 0, "Genre", "Drama")  # one genre, no separator
    set_label(dataset / "train_df.csv", 1, "Genre", "Action|Comedy")
    message = data_error(tiny_config(dataset).data)
    assert "data.label_column='Genre'" in message


# ------------------------------------------------------------------------------------------------ images


def test_missing_images_are_counted_and_the_first_named(dataset):
    names = delete_images(dataset, "train", 4)
    message = data_error(tiny_config(dataset).data)
    assert "4 of 48 images" in message
    assert str(dataset / "train_df.csv") in message
    assert ", ".join(names[:3]) in message
    assert names[3] not in message


def test_corrupted_image_is_named(dataset):
    broken = dataset / "Images" / "m0005.jpg"
    broken.write_bytes(b"\x00garbage, not a JPEG" * 10)
    with pytest.raises(DataError) as info:
        read_rgb(str(broken))
    assert str(broken) in str(info.value)
    assert "cannot be decoded" in str(info.value)


def test_corrupted_image_is_found_before_training(dataset):
    broken = dataset / "Images" / "m0005.jpg"
    broken.write_bytes(b"\x00garbage, not a JPEG" * 10)
    message = data_error(tiny_config(dataset).data)
    assert "m0005.jpg" in message


# ------------------------------------------------------------------------------------------- checkpoints


def save_efficientnet(path: Path, metadata: bool = True) -> Path:
    """A model file of another architecture: with mlic's metadata, or a bare state_dict."""
    state = timm.create_model("test_efficientnet", pretrained=False, num_classes=len(CLASSES)).state_dict()
    if metadata:
        state = {"state_dict": state, "model_name": "test_efficientnet", "classes": CLASSES}
    torch.save(state, path)
    return path


def resnet():
    return create_model(Model(name="test_resnet", pretrained=False), len(CLASSES))


def checkpoint_error(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(resnet(), path, "test_resnet", CLASSES)
    return str(info.value)


def test_checkpoint_of_another_architecture_names_both(tmp_path):
    path = save_efficientnet(tmp_path / "other.pth")
    message = checkpoint_error(path)
    assert str(path) in message
    assert "'test_efficientnet'" in message
    assert "'test_resnet'" in message


def test_state_dict_of_another_architecture_does_not_fit(tmp_path):
    path = save_efficientnet(tmp_path / "bare.pth", metadata=False)
    message = checkpoint_error(path)
    assert str(path) in message
    assert "does not fit" in message


def test_missing_checkpoint_is_named(tmp_path):
    message = checkpoint_error(tmp_path / "missing.pth")
    assert str(tmp_path / "missing.pth") in message
    assert "does not exist" in message


def test_unreadable_checkpoint_is_named(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not torch weights")
    message = checkpoint_error(path)
    assert str(path) in message
    assert "cannot be read" in message


def test_missing_pretrained_file_is_named():
    with pytest.raises(CheckpointError) as info:
        create_model(Model(name="test_resnet", pretrained="missing.pth"), len(CLASSES))
    assert "model.pretrained" in str(info.value)
    assert "missing.pth does not exist" in str(info.value)


def test_unknown_model_kwarg_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        create_model(Model(name="test_resnet", pretrained=False, kwargs={"drop_rat": 0.1}), len(CLASSES))
    assert "model.kwargs" in str(info.value)
    assert "'drop_rat'" in str(info.value)


def test_checkpoint_mismatch_stops_run_before_the_experiment_folder(dataset, tmp_path):
    config = tiny_config(dataset, "mismatch", model=Model(name="test_resnet", pretrained=False))
    config.model.checkpoint = str(save_efficientnet(tmp_path / "other.pth"))
    with pytest.raises(CheckpointError):
        run(config)
    assert not (tmp_path / "experiments").exists()


# ------------------------------------------------------------------------------------------ command line
# Each `python train.py` spends ~6 s importing torch and Lightning before it can fail, so the cases
# below are all started at once by the `cli` fixture (they share the CPU cores) and each test checks
# its own.


def _cli_missing_images(folder: Path) -> list[str]:
    delete_images(make_dataset(folder / "data"), "valid", 5)
    return [str(FIXTURES / "tiny.py")]


def _cli_bad_label(folder: Path) -> list[str]:
    set_label(make_dataset(folder / "data") / "train_df.csv", 10, "Action", "x")
    return [str(FIXTURES / "tiny.py")]


def _cli_checkpoint_mismatch(folder: Path) -> list[str]:
    make_dataset(folder / "data")
    save_efficientnet(folder / "other_arch.pth")
    return [str(FIXTURES / "checkpoint_other_arch.py")]


CLI_CASES = {
    "missing_images": _cli_missing_images,
    "bad_label": _cli_bad_label,
    "checkpoint_mismatch": _cli_checkpoint_mismatch,
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """`cli(name)` → (folder, CompletedProcess) of `python train.py ARGS` run in that case's folder."""
    yield from start_cli_cases(CLI_CASES, tmp_path_factory)


def test_cli_missing_images_exit_2_before_training(cli):
    folder, result = cli("missing_images")
    stderr = assert_user_error(result)
    assert "5 of 24 images" in stderr
    assert "valid_df.csv" in stderr
    assert_nothing_trained(folder, "tiny")


def test_cli_bad_label_exits_2_naming_row_and_column(cli):
    folder, result = cli("bad_label")
    stderr = assert_user_error(result)
    assert "train_df.csv, row 12, column 'Action'" in stderr
    assert_nothing_trained(folder, "tiny")


def test_cli_checkpoint_of_another_architecture_exits_2_before_training(cli):
    folder, result = cli("checkpoint_mismatch")
    stderr = assert_user_error(result)
    assert "other_arch.pth" in stderr
    assert "'test_efficientnet'" in stderr
    assert "'test_resnet'" in stderr
    assert_nothing_trained(folder, "other_arch")


def test_an_augmentation_that_returns_no_image_stops_before_training(dataset):
    config = tiny_config(dataset, "bad_aug")
    config.data.augmentations = lambda image: None
    with pytest.raises(ConfigError, match="'data.augmentations' returned NoneType"):
        run(config)
    assert not Path("experiments/bad_aug/metrics.csv").exists()


def test_an_augmentation_that_returns_floats_is_refused(dataset):
    config = tiny_config(dataset, "float_aug")
    config.data.augmentations = lambda image: image.astype("float32") / 255
    with pytest.raises(ConfigError, match="float32 array"):
        run(config)


@pytest.mark.parametrize(
    "loss, message",
    [
        (losses.BCEWithLogitsLoss(pos_weight=[1.0, 2.0]), "pos_weight has 2 values but the logits have 3"),
        (losses.FocalLoss(reduction="none"), "must return one number per batch, got \\(4, 3\\)"),
    ],
)
def test_a_loss_that_does_not_fit_stops_before_the_earlier_run_is_moved(dataset, loss, message):
    config = tiny_config(dataset, "bad_loss", loss=loss)
    earlier = config.experiment_dir
    earlier.mkdir(parents=True)
    (earlier / "model.best.pth").write_bytes(b"an earlier run")
    with pytest.raises(ConfigError, match=f"field 'loss': .*{message}"):
        run(config)
    assert (earlier / "model.best.pth").read_bytes() == b"an earlier run"
    assert [p.name for p in earlier.parent.iterdir()] == ["bad_loss"]


def test_under_a_launcher_only_the_first_process_runs_a_one_process_command(monkeypatch):
    """swa.py, export.py, predict.py, mlic.data.split under torchrun (RANK set): one process does the work."""
    calls = []
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        assert run_cli(lambda r=rank: calls.append(r) or 0, debug=False) == 0
    assert calls == ["0"]
    assert run_cli(lambda: calls.append("train") or 0, debug=False, every_process=True) == 0
    assert calls == ["0", "train"]
