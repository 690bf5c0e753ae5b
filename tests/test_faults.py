"""Faults, injected: a kill -9 in the middle of a checkpoint, SWA or export write, a full disk, an output
folder that cannot be created, SIGINT, an image that breaks in a loader worker, damaged files. Each ends
with one sentence and its exit status, and no visible artifact missing, stale or half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, make_dataset

CONFIG = """from mlic import SWA, Config, Data, Model, Stage, env_path

config = Config(
    experiment_name="faults",
    data=Data(root=env_path(), img_size=(32, 32), batch_size=8, num_workers={workers}),
    model=Model(name="test_resnet", pretrained=False),
    stages=[Stage("full", epochs={epochs})],
    swa=SWA(last_k=2),
    trainer=dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1),
    seed=0,
)
"""

# kill -9 the process right before a temporary file whose name matches is renamed into place
KILL_BEFORE_RENAME = """
import os, signal, mlic.utils.io
_fsync = mlic.utils.io._fsync
def _kill_at(path):
    if {match!r} in path.name:
        os.kill(os.getpid(), signal.SIGKILL)
    _fsync(path)
mlic.utils.io._fsync = _kill_at
"""


def _folder(tmp_path: Path, epochs: int = 2, workers: int = 0) -> Path:
    make_dataset(tmp_path / "data", n_train=32, n_valid=16, n_test=16)
    (tmp_path / "config.py").write_text(CONFIG.format(epochs=epochs, workers=workers))
    return tmp_path


def _cli(folder: Path, script: str, *args: str, patch: str = "") -> subprocess.CompletedProcess:
    """`python <script> ARGS` in `folder`, with `patch` run first in the same process."""
    code = f"{patch}\nimport runpy, sys\nsys.argv = [{script!r}, *{list(args)!r}]\n"
    code += f"runpy.run_path({str(REPO / script)!r}, run_name='__main__')\n"
    env = dict(os.environ, ROOT_PATH=str(folder / "data"))
    return subprocess.run(
        [sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True, timeout=600
    )


def _one_sentence(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """The exit status, no traceback, and the last line of stderr (after the log) as the one sentence."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def _hidden_temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*.tmp*") if p.is_file())


def _visible_artifacts_load(exp_dir: Path) -> None:
    """Every artifact a person or a later command opens is complete."""
    for path in exp_dir.rglob("*"):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix in (".pth", ".ckpt"):
            torch.load(path, map_location="cpu", weights_only=False)
        elif path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())


def test_kill_during_a_checkpoint_write_leaves_complete_files_and_resume_cleans_up(tmp_path):
    folder = _folder(tmp_path)
    exp_dir = folder / "experiments" / "faults"
    killed = _cli(folder, "train.py", "config.py", patch=KILL_BEFORE_RENAME.format(match=".ckpt"))
    assert killed.returncode == -signal.SIGKILL
    assert _hidden_temporaries(exp_dir / "checkpoints")  # the write that was cut short
    assert not list((exp_dir / "checkpoints").glob("*.ckpt"))  # none under a checkpoint's name
    _visible_artifacts_load(exp_dir)
    resumed = _cli(folder, "train.py", "config.py", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not _hidden_temporaries(exp_dir)
    assert (exp_dir / "report.md").is_file()
    _visible_artifacts_load(exp_dir)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-epoch run with its SWA and every export done once: the state faults are injected into."""
    folder = _folder(tmp_path_factory.mktemp("trained"), epochs=3)
    for script, args in (
        ("train.py", ["config.py"]),
        ("swa.py", ["config.py"]),
        ("export.py", ["experiments/faults"]),
    ):
        result = _cli(folder, script, *args)
        assert result.returncode == 0, result.stderr
    return folder


def test_kill_during_the_swa_write_keeps_the_earlier_average(trained):
    exp_dir = trained / "experiments" / "faults"
    before = (exp_dir / "model.swa.pth").read_bytes()
    killed = _cli(trained, "swa.py", "config.py", patch=KILL_BEFORE_RENAME.format(match="model.swa.pth"))
    assert killed.returncode == -signal.SIGKILL
    assert (exp_dir / "model.swa.pth").read_bytes() == before  # not renamed aside before the new one was done
    again = _cli(trained, "swa.py", "config.py")
    assert again.returncode == 0, again.stderr
    assert not _hidden_temporaries(exp_dir)
    assert [p.name for p in exp_dir.glob("model.swa.*.pth")]  # the earlier average, kept aside
    _visible_artifacts_load(exp_dir)


def test_kill_during_export_leaves_no_description_of_mixed_files_and_a_rerun_repairs_it(trained):
    exp_dir = trained / "experiments" / "faults"
    patch = (
        "import os, signal\n_replace = os.replace\n"
        "def _kill_at(a, b):\n"
        "    if str(b).endswith('model.pt2'):\n        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return _replace(a, b)\n"
        "os.replace = _kill_at\n"
    )
    args = ("experiments/faults", "--weights", "model.last.pth")
    killed = _cli(trained, "export.py", *args, patch=patch)
    assert killed.returncode == -signal.SIGKILL
    assert not (exp_dir / "export.json").exists()  # model.ts is new, model.pt2 old: nothing claims they match
    again = _cli(trained, "export.py", *args)
    assert again.returncode == 0, again.stderr
    files = json.loads((exp_dir / "export.json").read_text())["files"]
    assert {entry["weights"] for entry in files.values()} == {"model.last.pth"}
    assert all((exp_dir / name).is_file() for name in files)
    assert not _hidden_temporaries(exp_dir)


def test_swa_on_a_copied_experiment_writes_into_the_copy(trained, tmp_path):
    copy = tmp_path / "copied"
    import shutil

    shutil.copytree(trained / "experiments" / "faults", copy)
    original = (trained / "experiments" / "faults" / "model.swa.pth").read_bytes()
    result = _cli(trained, "swa.py", str(copy))
    assert result.returncode == 0, result.stderr
    assert (trained / "experiments" / "faults" / "model.swa.pth").read_bytes() == original
    assert list(copy.glob("model.swa.*.pth"))  # the copy's own earlier average was moved aside, in the copy


def test_a_full_disk_while_writing_the_best_model_is_one_sentence(tmp_path):
    folder = _folder(tmp_path)
    patch = (
        "import errno, mlic.utils.io\n_fsync = mlic.utils.io._fsync\n"
        "def _full(path):\n"
        "    if 'model.best.pth' in path.name:\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
        "    _fsync(path)\n"
        "mlic.utils.io._fsync = _full\n"
    )
    line = _one_sentence(_cli(folder, "train.py", "config.py", patch=patch))
    assert line.startswith(
        "error: cannot write experiments/faults/model.best.pth: no space left on the device"
    )
    exp_dir = folder / "experiments" / "faults"
    assert not _hidden_temporaries(exp_dir) and not (exp_dir / "model.best.pth").exists()
    assert len(pd.read_csv(exp_dir / "metrics.csv")) == 1  # the epoch's row was written before


def test_an_output_folder_that_cannot_be_created_is_one_sentence(tmp_path):
    folder = _folder(tmp_path)
    line = _one_sentence(_cli(folder, "train.py", "config.py", "--set", "output_dir=config.py/runs"))
    assert line == (
        "error: cannot create the experiment folder config.py/runs/faults: a part of the path is a file, "
        "not a folder; set output_dir to a folder you can write (--set output_dir=...)"
    )


def test_sigint_stops_training_with_exit_130_and_keeps_what_was_written(tmp_path):
    folder = _folder(tmp_path, epochs=200)
    env = dict(os.environ, ROOT_PATH=str(folder / "data"))
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "config.py"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = folder / "experiments" / "faults" / "metrics.csv"
    deadline = time.time() + 300
    while not (metrics.exists() and len(pd.read_csv(metrics)) >= 2) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    result = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    assert _one_sentence(result, code=130) == "interrupted (SIGINT); files already written are kept"
    exp_dir = folder / "experiments" / "faults"
    assert len(pd.read_csv(metrics)) >= 2 and (exp_dir / "model.best.pth").is_file()
    assert not _hidden_temporaries(exp_dir)
    _visible_artifacts_load(exp_dir)


def _break_image(folder: Path) -> str:
    """A file with a JPEG signature and garbage after it: OpenCV accepts the header, then cannot decode."""
    image_id = pd.read_csv(folder / "data" / "train_df.csv")["Id"].iloc[5]
    path = folder / "data" / "Images" / f"{image_id}.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + np.random.default_rng(0).bytes(600))
    return str(path)


def test_a_broken_image_stops_the_run_before_anything_is_written(tmp_path):
    folder = _folder(tmp_path, workers=1)
    broken = _break_image(folder)
    line = _one_sentence(_cli(folder, "train.py", "config.py"))
    assert line.startswith("error: 1 of 64 images cannot be used (first: ") and broken in line
    assert not (folder / "experiments").exists()


def test_a_broken_image_met_in_a_loader_worker_is_one_sentence(tmp_path):
    folder = _folder(tmp_path, workers=1)
    broken = _break_image(folder)
    result = _cli(
        folder, "train.py", "config.py", "--set", "data.verify_images=False", "--set", "data.cache=False"
    )
    line = _one_sentence(result)
    assert line == f"error: image {broken} cannot be decoded; replace or remove it from the label table"
    assert "Original Traceback" not in result.stderr and "DataLoader worker" not in result.stderr


def test_a_damaged_stages_json_is_one_sentence_on_resume(tmp_path):
    folder = _folder(tmp_path, epochs=2)
    assert _cli(folder, "train.py", "config.py").returncode == 0
    stages = folder / "experiments" / "faults" / "checkpoints" / "stages.json"
    stages.write_text('{"finished": ')
    line = _one_sentence(_cli(folder, "train.py", "config.py", "--resume"))
    assert line.startswith("error: experiments/faults/checkpoints/stages.json is damaged")


@pytest.mark.parametrize(
    "given, expected",
    [
        ("data", "is a folder; pass a Python file that defines `config`"),
        ("data/train_df.csv", "is not a Python file (.py)"),
    ],
    ids=["a folder", "a csv"],
)
def test_a_folder_or_a_table_given_as_the_config_is_named_so(tmp_path, given, expected):
    folder = _folder(tmp_path)
    assert expected in _one_sentence(_cli(folder, "train.py", given))


def test_a_pickled_object_is_refused_in_one_sentence_that_does_not_advise_unsafe_loading(tmp_path):
    folder = _folder(tmp_path)
    import argparse

    torch.save({"state_dict": {}, "args": argparse.Namespace(a=1)}, folder / "start.pth")
    line = _one_sentence(_cli(folder, "train.py", "config.py", "--set", "model.checkpoint=start.pth"))
    assert "holds Python objects beyond tensors" in line and "weights_only=False" not in line


def test_an_id_in_two_splits_and_a_class_without_positives_are_warned_in_the_log_and_the_report(
    tmp_path, caplog
):
    from conftest import tiny_config

    from mlic.train.stages import run

    data = make_dataset(tmp_path / "data")
    train, valid = pd.read_csv(data / "train_df.csv"), pd.read_csv(data / "valid_df.csv")
    valid.loc[0, "Id"] = train.loc[0, "Id"]  # the same image in train and valid
    valid["Drama"] = 0
    valid.to_csv(data / "valid_df.csv", index=False)
    caplog.set_level("WARNING", logger="mlic")
    exp_dir = run(tiny_config(data, "warned")).exp_dir
    expected = [
        f"1 id(s) are in both train and valid (first: {train.loc[0, 'Id']})",
        "1 class(es) have no positives in valid (Drama)",
    ]
    report = (exp_dir / "report.md").read_text()
    assert "## Warnings" in report
    for text in expected:
        assert text in caplog.text and text in report
    # the columns of metrics.csv do not move with the stages: a frozen first stage has no backbone LR
    columns = list(pd.read_csv(exp_dir / "metrics.csv").columns)
    assert columns[:6] == ["stage", "epoch", "step", "lr_head", "lr_backbone", "train/loss"]
    assert columns[-1] == "time_s"


def test_the_faults_page_names_only_tests_that_exist():
    import re

    text = (REPO / "docs" / "faults.md").read_text()
    named = re.findall(r"`(?:tests/([\w/]+\.py)::)?(test_\w+)`", text)
    assert len(named) >= 15
    for file, name in named:
        assert f"def {name}(" in (REPO / "tests" / (file or "test_faults.py")).read_text(), name


def test_a_read_only_output_folder_is_one_sentence(tmp_path, monkeypatch, capsys):
    import errno

    folder = _folder(tmp_path)
    monkeypatch.setenv("ROOT_PATH", str(folder / "data"))
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):  # as root, chmod does not stop writes: a read-only mount, simulated
        if "readonly" in str(self):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    sys.path.insert(0, str(REPO))
    try:
        import train
    finally:
        sys.path.remove(str(REPO))
    assert train.main(["config.py", "--set", "output_dir=readonly"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: cannot create the experiment folder readonly/faults: the file system is read-only; "
        "set output_dir to a folder you can write (--set output_dir=...)"
    )
