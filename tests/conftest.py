"""Fixtures: tiny learnable datasets generated into tmp_path, and configs on tiny timm models."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mlic import Config, Data, Model, Stage

CLASSES = ["Action", "Comedy", "Drama"]
# Each class paints a coloured square in its own corner, so a tiny CNN can learn it in a few epochs.
_CORNERS = [(0, 0), (0, 1), (1, 0)]
_COLOURS = [(230, 40, 40), (40, 230, 40), (40, 40, 230)]


def make_image(labels: np.ndarray, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    image = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    half = size // 2
    for c, on in enumerate(labels):
        if on:
            r, q = _CORNERS[c]
            image[r * half + 2 : (r + 1) * half - 2, q * half + 2 : (q + 1) * half - 2] = _COLOURS[c]
    return image


def make_dataset(root: Path, n_train: int = 48, n_valid: int = 24, n_test: int = 24, seed: int = 0) -> Path:
    """Course layout: train_df/valid_df/test_df.csv with Id + one 0/1 column per class, Images/<Id>.jpg."""
    rng = np.random.default_rng(seed)
    (root / "Images").mkdir(parents=True, exist_ok=True)
    start = 0
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        labels = (rng.random((n, len(CLASSES))) < 0.4).astype(int)
        labels[labels.sum(1) == 0, rng.integers(0, len(CLASSES))] = 1
        ids = [f"m{start + i:04d}" for i in range(n)]
        start += n
        for i, row in zip(ids, labels):
            image = make_image(row, rng)
            cv2.imwrite(str(root / "Images" / f"{i}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        df = pd.DataFrame(labels, columns=CLASSES)
        df.insert(0, "Id", ids)
        df.to_csv(root / f"{split}_df.csv", index=False)
    return root


def pytest_configure(config: pytest.Config) -> None:
    """Under `make test` two workers share two cores: one torch thread each, or they fight over them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture(autouse=True)
def _chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder, so `experiments/` lands in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    # under `make test` two workers share the cores: one thread each (and their subprocesses) is faster
    os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")


FAST_TRAINER = dict(
    accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1
)


def tiny_config(root: Path, name: str = "tiny", stages: list[Stage] | None = None, **overrides) -> Config:
    data = Data(root=str(root), img_size=(32, 32), batch_size=8, num_workers=0)
    config = Config(
        experiment_name=name,
        data=data,
        model=Model(name="test_resnet", pretrained=False),
        stages=stages or [Stage("head", epochs=1, freeze_backbone=True), Stage("full", epochs=2)],
        trainer=dict(FAST_TRAINER),
        seed=0,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


REPO = Path(__file__).resolve().parents[1]


def start_cli_cases(cases: dict, tmp_path_factory: pytest.TempPathFactory):
    """Start `python train.py ARGS` for every case at once (each pays torch's import time), each in its
    own folder; yield `result(name)` → (folder, CompletedProcess) that waits for that case."""
    env = {k: v for k, v in os.environ.items() if k != "ROOT_PATH"}
    started = {}
    for name, setup in cases.items():
        folder = tmp_path_factory.mktemp(name)
        args = setup(folder)
        with open(folder / "stdout", "w") as out, open(folder / "stderr", "w") as err:
            process = subprocess.Popen(
                [sys.executable, str(REPO / "train.py"), *args], cwd=folder, env=env, stdout=out, stderr=err
            )
        started[name] = (folder, process)

    def result(name: str):
        folder, process = started[name]
        process.wait(timeout=300)
        stdout, stderr = ((folder / f).read_text() for f in ("stdout", "stderr"))
        return folder, subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    yield result
    for _, process in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


def train_cli(folder: Path, config_text: str) -> subprocess.CompletedProcess:
    """`python train.py config.py` as a user runs it: `folder/config.py` written from `config_text`,
    ROOT_PATH at `folder/data`, run from `folder`."""
    (folder / "config.py").write_text(config_text)
    env = {**os.environ, "ROOT_PATH": str(folder / "data")}
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), "config.py"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_user_error(result: subprocess.CompletedProcess) -> str:
    """Exit status 2 and one line `error: <message>` on stderr, no traceback; returns stderr."""
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def assert_nothing_trained(folder: Path, name: str) -> None:
    exp_dir = folder / "experiments" / name
    assert not (exp_dir / "metrics.csv").exists()
    assert not (exp_dir / "checkpoints").exists()
    assert not list(exp_dir.glob("*.pth"))


def train_from_file(folder: Path, config_text: str) -> Path:
    """As a user would: a dataset in `folder/data`, `folder/config.py` reading ROOT_PATH, trained from
    `folder`; returns the experiment folder. ROOT_PATH and the working directory are restored after."""
    from mlic.config.loading import load_config
    from mlic.train.stages import run

    make_dataset(folder / "data")
    (folder / "config.py").write_text(config_text)
    old_cwd, old_root = os.getcwd(), os.environ.get("ROOT_PATH")
    os.chdir(folder)
    os.environ["ROOT_PATH"] = str(folder / "data")
    try:
        return folder / run(load_config(folder / "config.py")).exp_dir
    finally:
        os.chdir(old_cwd)
        if old_root is None:
            os.environ.pop("ROOT_PATH", None)
        else:
            os.environ["ROOT_PATH"] = old_root


# ----------------------------------------------------------- the other tasks' data (tests of several modules)

SINGLE_CLASSES = ["left", "middle", "right"]  # each paints a square in its own corner (conftest.make_image)


def make_folders(root: Path, counts=(("train", 48), ("valid", 24), ("test", 24)), seed: int = 0) -> Path:
    """train/valid/test with a subfolder of PNGs per class; one class per image."""
    rng = np.random.default_rng(seed)
    for split, n in counts:
        for i in range(n):
            c = i % len(SINGLE_CLASSES)
            labels = np.eye(len(SINGLE_CLASSES), dtype=int)[c]
            folder = root / split / SINGLE_CLASSES[c]
            folder.mkdir(parents=True, exist_ok=True)
            image = cv2.cvtColor(make_image(labels, rng), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(folder / f"{split}{i:03d}.png"), image)
    return root


def single_config(root: Path, name: str = "single", **overrides) -> Config:
    config = Config(
        experiment_name=name,
        task="single_label",
        data=Data(
            root=str(root),
            train="train",
            valid="valid",
            test="test",
            img_size=(32, 32),
            batch_size=8,
            num_workers=0,
        ),
        model=Model(name="test_resnet", pretrained=False),
        stages=[Stage("head", epochs=2, freeze_backbone=True, lr=3e-3), Stage("full", epochs=4, lr=3e-3)],
        trainer=dict(FAST_TRAINER),
        seed=0,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


SEG_CLASSES = ["background", "square", "bar"]  # mask values 0, 1, 2: the list's positions


def make_sample(rng: np.random.Generator, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a bright square (class 1) and a dark horizontal bar (class 2), and its mask."""
    image = rng.integers(90, 160, (size, size, 3)).astype(np.uint8)
    mask = np.zeros((size, size), dtype=np.uint8)
    s = int(rng.integers(8, 14))
    y, x = (int(v) for v in rng.integers(0, size - s, 2))
    image[y : y + s, x : x + s] = (250, 240, 60)
    mask[y : y + s, x : x + s] = 1
    r = int(rng.integers(0, size - 4))
    image[r : r + 4, :] = (10, 20, 90)
    mask[r : r + 4, :] = 2
    return image, mask


def make_masks(
    root: Path, counts=(("train", 24), ("valid", 8), ("test", 8)), seed: int = 0, multilabel: bool = False
) -> Path:
    """<split>/images/<id>.png and <split>/masks/<id>.png (multi-label: masks/<class>/<id>.png)."""
    rng = np.random.default_rng(seed)
    for split, n in counts:
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image, mask = make_sample(rng)
            name = f"{split}{i:03d}.png"
            Image.fromarray(image).save(root / split / "images" / name)
            if multilabel:
                for value, c in ((1, "square"), (2, "bar")):
                    (root / split / "masks" / c).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(((mask == value) * 255).astype(np.uint8)).save(
                        root / split / "masks" / c / name
                    )
            else:
                (root / split / "masks").mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(root / split / "masks" / name)
    return root


def seg_config(root: Path, name: str = "seg", task: str = "segmentation", **overrides) -> Config:
    config = Config(
        experiment_name=name,
        task=task,
        data=Data(
            root=str(root),
            train="train",
            valid="valid",
            test="test",
            classes=list(SEG_CLASSES) if task == "segmentation" else None,
            img_size=(32, 32),
            batch_size=8,
            num_workers=0,
        ),
        model=Model(
            name="Unet",
            encoder="tu-test_resnet",
            pretrained=False,
            kwargs={"encoder_depth": 3, "decoder_channels": [32, 16, 8]},
        ),
        stages=[
            Stage("decoder", epochs=2, freeze_backbone=True, lr=1e-2),
            Stage("full", epochs=6, lr=1e-2),
        ],
        trainer=dict(FAST_TRAINER),
        seed=0,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


# ------------------------------------------------------------------------- a decompression bomb


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bomb(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A valid one-colour PNG of width×height pixels (one bit each, so 20000×20000 is a 48 KB file that
    decodes to 1.2 GB of RGB), whatever `path`'s extension says."""
    rows = zlib.compress(bytes((width + 7) // 8 + 1) * height, 9)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")
    )
    return path


# ------------------------------------------------------------- model files that hold code (never run)


class MakesAFolder:
    """Pickles as a call of `os.makedirs(path)`: loading it without weights_only creates `path` (torch
    blocks the `os` module outright, and words that refusal apart from other globals')."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.makedirs, (self.path,))


class Settings:
    """A custom class whose unpickling creates the file its state names."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).touch()
