"""Two processes on CPU (Lightning's DDP with the gloo backend): evaluation scores every sample exactly
once, so two processes report what one does for the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_dataset

from mlic.config_file import load_config
from mlic.stages import run

CONFIG = """from mlic import Config, Data, Model, Stage, env_path

config = Config(
    experiment_name="ddp",
    data=Data(root=env_path(), img_size=(32, 32), batch_size=4, num_workers=0),
    model=Model(name="test_resnet", pretrained=False),
    stages=[Stage("full", epochs=2)],
    trainer=dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1),
    seed=0,
)
"""

# evaluates the experiment's model.best.pth on test; Lightning's launcher runs this file again for rank 1
EVALUATE = """import json, sys
from lightning.fabric.utilities.rank_zero import rank_zero_only
from mlic.config_file import load_config
from mlic.evaluation import evaluate_split

config = load_config("config.py", sys.argv[2:])
outcome = evaluate_split(config, "test")
if rank_zero_only.rank == 0:
    json.dump(outcome.results, open(sys.argv[1], "w"))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process trains; the test split has an odd number of images, so two ranks need padding."""
    folder = tmp_path_factory.mktemp("ddp")
    make_dataset(folder / "data", n_train=32, n_valid=16, n_test=25)
    (folder / "config.py").write_text(CONFIG)
    (folder / "evaluate.py").write_text(EVALUATE)
    old_cwd, old_root = os.getcwd(), os.environ.get("ROOT_PATH")
    os.chdir(folder)
    os.environ["ROOT_PATH"] = str(folder / "data")
    try:
        run(load_config("config.py"))
    finally:
        os.chdir(old_cwd)
        os.environ.pop("ROOT_PATH") if old_root is None else os.environ.update(ROOT_PATH=old_root)
    return folder


def _evaluate(folder: Path, name: str, *overrides: str) -> dict:
    env = dict(os.environ, ROOT_PATH=str(folder / "data"))
    args = [sys.executable, "evaluate.py", f"{name}.json", *overrides]
    result = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads((folder / f"{name}.json").read_text())


def test_two_processes_score_every_test_image_once_and_agree_with_one(trained):
    one = _evaluate(trained, "one")
    two = _evaluate(trained, "two", "trainer.devices=2", "trainer.strategy=ddp")
    assert set(one["test"]) == set(two["test"]) >= {"map", "auc", "f1_micro", "f1_macro", "f1_macro_tuned"}
    for name, value in one["test"].items():
        assert two["test"][name] == pytest.approx(value, abs=1e-6), name


def test_train_py_test_on_two_processes_prints_one_table_with_the_one_process_numbers(trained):
    env = dict(os.environ, ROOT_PATH=str(trained / "data"))
    outputs = []
    for extra in ([], ["--set", "trainer.devices=2", "--set", "trainer.strategy=ddp"]):
        result = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve().parents[1] / "train.py"),
                "config.py",
                "--test",
                *extra,
            ],
            cwd=trained,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        outputs.append([line for line in result.stdout.splitlines() if line.startswith("test ")])
    assert len(outputs[1]) == 1 and outputs[0] == outputs[1]  # one table, the same numbers


def _train(folder: Path, command: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, ROOT_PATH=str(folder / "data"))
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def _fresh(tmp_path: Path) -> Path:
    make_dataset(tmp_path / "data", n_train=32, n_valid=16, n_test=25)
    (tmp_path / "config.py").write_text(CONFIG)
    return tmp_path


TRAIN_PY = str(Path(__file__).resolve().parents[1] / "train.py")


@pytest.mark.parametrize(
    "launch",
    [
        [
            sys.executable,
            TRAIN_PY,
            "config.py",
            "--set",
            "trainer.devices=2",
            "--set",
            "trainer.strategy=ddp",
        ],
        [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2", TRAIN_PY, "config.py"],
    ],
    ids=["trainer devices=2", "torchrun"],
)
def test_two_processes_train_one_experiment_each_rank_on_half_the_batches(tmp_path, launch):
    folder = _fresh(tmp_path)
    result = _train(folder, launch)
    assert result.returncode == 0, result.stderr
    exp_dir = folder / "experiments" / "ddp"
    assert (exp_dir / "report.md").is_file() and (exp_dir / "thresholds.json").is_file()
    assert [p.name for p in (folder / "experiments").iterdir()] == ["ddp"]  # no rank moved another's folder
    rows = pd.read_csv(exp_dir / "metrics.csv")
    assert list(rows["epoch"]) == [1, 2]
    assert list(rows["step"]) == [4, 8]  # 32 images in batches of 4, split over 2 processes
    assert result.stdout.count("experiment folder:") == 1  # one process prints


def test_a_simulated_slurm_job_of_two_tasks_trains_one_experiment(tmp_path):
    """What `srun --ntasks=2` gives each task, set by hand: Lightning's SLURM support takes the ranks
    from it, and mlic trains on both tasks with DDP without a config change."""
    folder = _fresh(tmp_path)
    slurm = dict(
        SLURM_NTASKS="2",
        SLURM_NTASKS_PER_NODE="2",
        SLURM_NODEID="0",
        SLURM_JOB_NAME="mlic",
        SLURM_NODELIST="localhost",
        SLURM_JOB_ID="4242",
        MASTER_PORT="29533",
        ROOT_PATH=str(folder / "data"),
    )
    tasks = [
        subprocess.Popen(
            [sys.executable, TRAIN_PY, "config.py"],
            cwd=folder,
            env=dict(os.environ, **slurm, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [task.communicate(timeout=600) for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert [p.name for p in (folder / "experiments").iterdir()] == ["ddp"]
    assert list(pd.read_csv(folder / "experiments" / "ddp" / "metrics.csv")["step"]) == [4, 8]
    assert "experiment folder:" in outputs[0][0] and "experiment folder:" not in outputs[1][0]


def test_num_iteration_on_epoch_counts_optimizer_steps_of_the_job_whatever_the_processes(tmp_path):
    folder = _fresh(tmp_path)
    iterations = ["--set", "data.num_iteration_on_epoch=3"]
    one = _train(folder, [sys.executable, TRAIN_PY, "config.py", *iterations, "--set", "experiment_name=one"])
    two = _train(
        folder,
        [sys.executable, TRAIN_PY, "config.py", *iterations, "--set", "experiment_name=two"]
        + ["--set", "trainer.devices=2", "--set", "trainer.strategy=ddp"],
    )
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    for name in ("one", "two"):
        assert list(pd.read_csv(folder / "experiments" / name / "metrics.csv")["step"]) == [3, 6], name
