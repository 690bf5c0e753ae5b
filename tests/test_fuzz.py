"""A fuzzer over what users hand mlic: config field values of any type, `--set` strings, damaged label
tables, random bytes as images and as model files. Each input must end in success or in one sentence (a
`MlicError`, which the commands print as `error: ...` with exit 2): never another exception, which would
be a traceback, and never an experiment folder, since every input is checked before anything is written.

Hypothesis runs derandomized (the same cases every time) and bounded (about a minute in all).
`pytest tests/test_fuzz.py --hypothesis-show-statistics` prints how many cases each part generated.
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import CLASSES, make_dataset
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mlic.config.loading import load_config
from mlic.models.weights import load_weights, read_state_dict
from mlic.train.prepare import check_inputs
from mlic.utils.cli import one_sentence
from mlic.utils.errors import MlicError

FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure here is a failure everywhere
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

CONFIG = """
from mlic import Config, Data, Model, Stage
config = Config(
    experiment_name="fuzz",
    data=Data(root=ROOT, img_size=(32, 32), batch_size=8, num_workers=0, verify_images=True),
    model=Model(name="test_resnet", pretrained=False),
    stages=[Stage("head", epochs=1, freeze_backbone=True), Stage("full", epochs=1)],
    trainer=dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False),
    seed=0,
)
"""

FIELDS = [
    "experiment_name",
    "seed",
    "save_top_k",
    "monitor",
    "task",
    "data.batch_size",
    "data.img_size",
    "data.num_workers",
    "data.train",
    "data.valid",
    "data.classes",
    "data.data_fraction",
    "data.cache",
    "data.augmentations",
    "model.name",
    "model.pretrained",
    "model.checkpoint",
    "model.drop_rate",
    "model.prior_init",
    "stages.0.epochs",
    "stages.0.lr",
    "stages.1.freeze",
    "stages.1.backbone_lr_scale",
    "optimizer.lr",
    "optimizer.weight_decay",
    "trainer.precision",
    "trainer.accelerator",
    "loss",
    "lr_finder",
    "swa",
    "sweep",
    "mixing",
]

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-2, 64), max_size=3),
    st.tuples(st.integers(-2, 64), st.integers(-2, 64)),
    st.dictionaries(st.text(max_size=5), st.integers(-2, 5), max_size=2),
)


def ends_in_one_sentence(action) -> str | None:
    """Run `action`; None when it succeeds, the sentence when it stops with a user's error. Any other
    exception propagates (a traceback the user would see)."""
    try:
        action()
    except MlicError as e:
        message = one_sentence(e)  # as the commands print it
        assert message, f"{type(e).__name__} with an empty message"
        assert "\n" not in message, f"not one sentence: {message!r}"
        assert not Path("experiments").exists(), "a bad input left an experiment folder"
        return message
    return None


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    make_dataset(root / "data", n_train=16, n_valid=8, n_test=8)
    (root / "config.py").write_text(CONFIG.replace("ROOT", repr(str(root / "data"))))
    return root


@settings(FUZZ, max_examples=300)
@given(key=st.sampled_from(FIELDS), value=VALUES)
def test_any_value_in_any_config_field_is_accepted_or_one_sentence(fuzz_root: Path, key: str, value):
    assume(not (key == "model.pretrained" and value is True))  # timm's download: no network here

    def action():
        config = load_config(fuzz_root / "config.py", [f"{key}={value!r}"])
        check_inputs(config)

    ends_in_one_sentence(action)


@settings(FUZZ, max_examples=600)
@given(
    assignment=st.one_of(
        st.text(max_size=40),
        st.from_regex(r"[a-z_]{1,8}(\.[a-z_0-9\[\]]{1,8}){0,3}=[^\n]{0,20}", fullmatch=True),
    )
)
def test_any_set_string_is_accepted_or_one_sentence(fuzz_root: Path, assignment: str):
    ends_in_one_sentence(lambda: load_config(fuzz_root / "config.py", [assignment]))


CELLS = st.one_of(
    st.none(), st.integers(-2, 3), st.floats(allow_nan=True), st.text(max_size=6), st.just(" m0001 ")
)
EDITS = st.lists(
    st.one_of(
        st.tuples(st.just("drop_column"), st.sampled_from(["Id", *CLASSES])),
        st.tuples(st.just("add_column"), st.text(max_size=8)),
        st.tuples(st.just("set_cell"), st.integers(0, 15), st.sampled_from(["Id", *CLASSES]), CELLS),
        st.tuples(st.just("duplicate_row"), st.integers(0, 15)),
        st.tuples(st.just("rename_id"), st.integers(0, 15), st.text(min_size=1, max_size=10)),
        st.tuples(st.just("keep_rows"), st.integers(0, 3)),
    ),
    min_size=1,
    max_size=4,
)


def edited(table: pd.DataFrame, edits: list[tuple]) -> pd.DataFrame:
    table = table.copy().astype(object)
    for edit in edits:
        kind, *args = edit
        rows = len(table)
        if kind == "drop_column" and args[0] in table.columns:
            table = table.drop(columns=[args[0]])
        elif kind == "add_column":
            table[args[0] or "extra"] = 1
        elif kind == "set_cell" and rows and args[1] in table.columns:
            table.loc[table.index[args[0] % rows], args[1]] = args[2]
        elif kind == "duplicate_row" and rows:
            table = pd.concat([table, table.iloc[[args[0] % rows]]], ignore_index=True)
        elif kind == "rename_id" and rows and "Id" in table.columns:
            table.loc[table.index[args[0] % rows], "Id"] = args[1]
        elif kind == "keep_rows":
            table = table.iloc[: args[0]]
    return table


@settings(FUZZ, max_examples=200)
@given(split=st.sampled_from(["train", "valid"]), edits=EDITS)
def test_any_damaged_label_table_is_read_or_one_sentence(fuzz_root: Path, tmp_path: Path, split: str, edits):
    data = tmp_path / "tables" / "data"
    shutil.rmtree(data.parent, ignore_errors=True)
    data.mkdir(parents=True)
    (data / "Images").symlink_to(fuzz_root / "data" / "Images")
    for name in ("train", "valid", "test"):
        shutil.copy(fuzz_root / "data" / f"{name}_df.csv", data / f"{name}_df.csv")
    table = pd.read_csv(data / f"{split}_df.csv")
    edited(table, edits).to_csv(data / f"{split}_df.csv", index=False)
    ends_in_one_sentence(
        lambda: check_inputs(load_config(fuzz_root / "config.py", [f"data.root={str(data)!r}"]))
    )


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width`×`height` pixels (up to 3.6 gigapixels) and holds no pixel data."""
    chunk = lambda kind, data: (  # noqa: E731
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@settings(FUZZ, max_examples=120)
@given(
    content=st.one_of(
        st.binary(max_size=300),
        st.integers(0, 600),
        st.builds(png_header, st.integers(0, 60000), st.integers(0, 60000)),
    )
)
def test_random_bytes_as_an_image_are_read_or_one_sentence(fuzz_root: Path, tmp_path: Path, content):
    data = tmp_path / "images" / "data"
    shutil.rmtree(data.parent, ignore_errors=True)
    shutil.copytree(fuzz_root / "data", data)
    image = data / "Images" / "m0003.jpg"
    original = image.read_bytes()
    # random bytes, or the real JPEG cut short at a random length
    image.write_bytes(content if isinstance(content, bytes) else original[:content])
    ends_in_one_sentence(
        lambda: check_inputs(load_config(fuzz_root / "config.py", [f"data.root={str(data)!r}"]))
    )


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


TENSORS = st.builds(lambda n: torch.zeros(n), st.integers(0, 4))
STRUCTURES = st.recursive(
    st.one_of(st.none(), st.integers(), st.text(max_size=5), TENSORS),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(FUZZ, max_examples=300)
@given(
    content=st.one_of(
        st.binary(max_size=400),
        st.builds(saved, STRUCTURES),
        st.builds(lambda obj, cut: saved(obj)[:cut], STRUCTURES, st.integers(0, 2000)),
    )
)
def test_random_bytes_as_a_model_file_are_read_or_one_sentence(tmp_path: Path, content: bytes):
    path = tmp_path / "model.best.pth"
    path.write_bytes(content)
    ends_in_one_sentence(lambda: read_state_dict(path, "model file"))
    ends_in_one_sentence(lambda: load_weights(path))
