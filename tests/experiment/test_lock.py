"""One writer per experiment folder: a second run of an experiment that is being written stops with one
sentence naming the holder, and nothing of the first is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, make_dataset, tiny_config

from mlic.deploy.export import export_experiment
from mlic.experiment.lock import ExperimentBusy, experiment_lock, lock_paths
from mlic.train.swa import run_swa

CONFIG = """
import time
from pathlib import Path

import lightning as L

from mlic import Config, Data, Model, Stage, env_path


class WaitForGo(L.Callback):  # holds the run at its start until the test has tried the second one
    def on_train_start(self, trainer, module):
        end = time.time() + 120  # a failed test never says go: the run must not wait forever
        while not Path("go").exists() and time.time() < end:
            time.sleep(0.05)


config = Config(
    callbacks=[WaitForGo()],
    experiment_name="twice",
    data=Data(root=env_path("ROOT_PATH"), img_size=(32, 32), batch_size=8, num_workers=0),
    model=Model(name="test_resnet", pretrained=False),
    stages=[Stage("full", epochs=EPOCHS)],
    trainer=dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False),
    seed=0,
)
"""


def start_train(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "ROOT_PATH": str(folder / "data")}
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "config.py"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    end = time.time() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < end, f"{path} did not appear"
        time.sleep(0.05)


def test_two_runs_of_one_experiment_one_trains_the_other_says_why(tmp_path: Path):
    make_dataset(tmp_path / "data")
    (tmp_path / "config.py").write_text(CONFIG.replace("EPOCHS", "2"))
    first = start_train(tmp_path)
    try:
        second_run_says_why(tmp_path, first)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def second_run_says_why(tmp_path: Path, first: subprocess.Popen) -> None:
    exp_dir = tmp_path / "experiments" / "twice"
    wait_for(lock_paths(exp_dir)[1], first)  # the first run holds the experiment
    second = start_train(tmp_path)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 2 and "Traceback" not in err, err[-3000:]
    stderr = err.strip().splitlines()[-1]  # after the log lines of its checks, one sentence
    assert f"experiment experiments/twice is being written by another run: PID {first.pid} on " in stderr
    assert "--set experiment_name=" in stderr
    (tmp_path / "go").touch()
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    # the folder is a single run's: nothing set aside, each epoch once, no lock left behind
    assert sorted(p.name for p in (tmp_path / "experiments").iterdir()) == [".twice.lock", "twice"]
    metrics = pd.read_csv(exp_dir / "metrics.csv")
    assert list(zip(metrics["stage"], metrics["epoch"])) == [("full", 1), ("full", 2)]
    assert (exp_dir / "model.best.pth").is_file() and (exp_dir / "report.md").is_file()


def test_a_killed_holder_releases_the_experiment(tmp_path: Path, dataset: Path):
    exp_dir = tmp_path / "experiments" / "held"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from mlic.experiment.lock import experiment_lock\n"
            f"with experiment_lock(Path({str(exp_dir)!r})):\n    time.sleep(300)\n",
        ]
    )
    note = lock_paths(exp_dir)[1]
    wait_for(note, holder)
    assert json.loads(note.read_text())["pid"] == holder.pid
    with pytest.raises(ExperimentBusy, match=f"PID {holder.pid} on .* since "):
        with experiment_lock(exp_dir):
            pass
    exp_dir.mkdir()  # swa.py and export.py read an existing experiment: they wait their turn too
    with pytest.raises(ExperimentBusy, match=f"experiment {exp_dir} is being written by another run"):
        export_experiment(exp_dir)
    with pytest.raises(ExperimentBusy, match=f"PID {holder.pid} "):
        run_swa(tiny_config(dataset, "held", output_dir=str(exp_dir.parent)))
    holder.kill()
    holder.wait()
    with experiment_lock(exp_dir):  # the OS released the dead process's lock: no stale-lock cleanup needed
        with experiment_lock(exp_dir):  # and one process may nest its own holds (a range test in a run)
            assert note.is_file()
    assert not note.exists()
