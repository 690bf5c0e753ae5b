"""Two processes on CPU (Lightning's DDP with the gloo backend): evaluation scores every sample exactly
once, so two processes report what one does for the same weights; one experiment folder; the range test
runs once and every process trains with its LR; each process augments its own way; a failure in one
process stops the job with its sentence; an interrupted two-process run resumes on two."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import make_dataset

from mlic.config.loading import load_config
from mlic.models.weights import load_weights
from mlic.train.stages import run
from mlic.utils.cli import PEER_FAILED

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
from mlic.config.loading import load_config
from mlic.evaluate.evaluation import evaluate_split

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
    for extra in ([], DDP):
        result = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve().parents[2] / "train.py"),
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


TRAIN_PY = str(Path(__file__).resolve().parents[2] / "train.py")
DDP = ["--set", "trainer.devices=2", "--set", "trainer.strategy=ddp"]  # two processes, started by Lightning


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
    assert [p.name for p in (folder / "experiments").iterdir() if not p.name.startswith(".")] == [
        "ddp"
    ]  # no rank moved another's folder (.ddp.lock: the first process's lock)
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
    assert [p.name for p in (folder / "experiments").iterdir() if not p.name.startswith(".")] == ["ddp"]
    assert list(pd.read_csv(folder / "experiments" / "ddp" / "metrics.csv")["step"]) == [4, 8]
    assert "experiment folder:" in outputs[0][0] and "experiment folder:" not in outputs[1][0]


def test_num_iteration_on_epoch_counts_optimizer_steps_of_the_job_whatever_the_processes(tmp_path):
    folder = _fresh(tmp_path)
    iterations = ["--set", "data.num_iteration_on_epoch=3"]
    one = _train(folder, [sys.executable, TRAIN_PY, "config.py", *iterations, "--set", "experiment_name=one"])
    two = _train(
        folder,
        [sys.executable, TRAIN_PY, "config.py", *iterations, "--set", "experiment_name=two"] + DDP,
    )
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    for name in ("one", "two"):
        assert list(pd.read_csv(folder / "experiments" / name / "metrics.csv")["step"]) == [3, 6], name


# ---------------------------------------------------------------- a failure in one process of the job


def _break_first_image_of(folder: Path, rank: int) -> str:
    """Break the first training image that process `rank` of two reads in epoch 1: Lightning's
    DistributedSampler shuffles with the job's seed (0) and hands rank r every second index from r."""
    generator = torch.Generator().manual_seed(0)
    index = torch.randperm(32, generator=generator).tolist()[rank]
    image_id = pd.read_csv(folder / "data" / "train_df.csv")["Id"].iloc[index]
    path = folder / "data" / "Images" / f"{image_id}.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + np.random.default_rng(0).bytes(600))
    return str(path)


@pytest.mark.parametrize("rank", [0, 1])
def test_a_failure_in_one_process_stops_the_job_with_its_sentence_and_exit_2(tmp_path, rank):
    folder = _fresh(tmp_path)
    broken = _break_first_image_of(folder, rank)
    result = _train(
        folder,
        [
            sys.executable,
            TRAIN_PY,
            "config.py",
            "--set",
            "data.verify_images=False",
            "--set",
            "data.cache=False",
        ]
        + DDP,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    where = f"process {rank}: " if rank else ""
    reason = f"error: {where}image {broken} cannot be decoded; replace or remove it from the label table"
    assert reason in errors, errors
    # the other process, whose collective broke, says only that it stopped because of another one
    assert [e for e in errors if e != reason] in ([], [e for e in errors if PEER_FAILED in e]), errors


# --------------------------------------------------------------------------- lr="find" on two processes

# counts the range tests each process runs, and records the LR every process trains with
RECORD_LR = """import json, os
import lightning as L
import mlic.train.range_tests

_range_test = mlic.train.range_tests.range_test


def _counted(*args, **kwargs):
    with open(f"range_tests_{os.environ.get('RANK', '0')}.txt", "a") as f:
        f.write("one\\n")
    return _range_test(*args, **kwargs)


mlic.train.range_tests.range_test = _counted


class RecordLR(L.Callback):
    def on_train_start(self, trainer, module):
        lrs = [group["lr"] for group in trainer.optimizers[0].param_groups]
        json.dump(lrs, open(f"lr_rank{trainer.global_rank}.json", "w"))

    def on_train_end(self, trainer, module):
        total = float(sum(p.double().sum() for p in module.model.parameters()))
        json.dump(total, open(f"weights_rank{trainer.global_rank}.json", "w"))
"""


def test_lr_find_runs_once_and_every_process_trains_with_its_suggestion(tmp_path):
    folder = _fresh(tmp_path)
    config = RECORD_LR + CONFIG.replace('Stage("full", epochs=2)', 'Stage("full", epochs=2, lr="find")')
    config = config.replace("    seed=0,\n", "    seed=0,\n    callbacks=[RecordLR()],\n")
    (folder / "config.py").write_text(config)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    result = _train(folder, [torchrun, "--nproc_per_node=2", TRAIN_PY, "config.py"])
    assert result.returncode == 0, result.stderr[-3000:]
    # one range test, in the first process; the other waited for its LR
    assert sorted(p.name for p in folder.glob("range_tests_*.txt")) == ["range_tests_0.txt"]
    assert (folder / "range_tests_0.txt").read_text().count("one") == 1
    assert (folder / "experiments" / "ddp" / "lr_finder.csv").is_file()
    lrs = [json.loads((folder / f"lr_rank{r}.json").read_text()) for r in (0, 1)]
    assert lrs[0] == lrs[1] and lrs[0][0] != pytest.approx(1e-3)  # the suggestion, not the optimizer's LR
    weights = [json.loads((folder / f"weights_rank{r}.json").read_text()) for r in (0, 1)]
    assert weights[0] == pytest.approx(weights[1], rel=1e-6)  # the processes stayed one model


# ------------------------------------------------------------------------- augmentations per process

RECORD_AUGMENTATIONS = """import os
import numpy as np


def record(image):
    with open(f"augment_{os.environ.get('LOCAL_RANK', '0')}.txt", "a") as f:
        f.write(f"{np.random.random()!r}\\n")
    return image

"""


@pytest.mark.parametrize("workers", [0, 1])
def test_each_process_and_epoch_draws_its_own_augmentations(tmp_path, workers):
    folder = _fresh(tmp_path)
    config = RECORD_AUGMENTATIONS + CONFIG.replace(
        "num_workers=0)", f"num_workers={workers}, augmentations=record)"
    )
    (folder / "config.py").write_text(config)
    result = _train(folder, [sys.executable, TRAIN_PY, "config.py", *DDP])
    assert result.returncode == 0, result.stderr[-3000:]
    # the first line of each: one image through the train transform, checked before training
    draws = [(folder / f"augment_{r}.txt").read_text().split()[1:] for r in (0, 1)]
    assert [len(d) for d in draws] == [32, 32]  # 16 images a process, 2 epochs
    assert not set(draws[0]) & set(draws[1])  # no process repeats another's draws
    for d in draws:
        assert d[:16] != d[16:]  # nor an epoch the one before


# ----------------------------------------------------------------------- BatchNorm, EMA, resume


def test_a_frozen_backbone_keeps_its_batchnorm_statistics_and_the_ema_is_written_on_two_processes(tmp_path):
    folder = _fresh(tmp_path)
    config = CONFIG.replace(
        'stages=[Stage("full", epochs=2)]',
        'stages=[Stage("head", epochs=2, freeze_backbone=True), Stage("full", epochs=2)],\n'
        "    swa=SWA(ema_decay=0.9)",
    ).replace("from mlic import Config", "from mlic import SWA, Config")
    (folder / "config.py").write_text(config)
    result = _train(folder, [sys.executable, TRAIN_PY, "config.py", *DDP])
    assert result.returncode == 0, result.stderr[-3000:]
    exp_dir = folder / "experiments" / "ddp"
    head = load_weights(exp_dir / "checkpoints" / "head-last.ckpt")
    full = load_weights(exp_dir / "checkpoints" / "full-last.ckpt")
    means = [k for k in head if k.endswith("running_mean")]
    assert means and all(torch.equal(head[k], torch.zeros_like(head[k])) for k in means)  # frozen: untouched
    assert any(not torch.equal(full[k], head[k]) for k in means)  # trainable: updated
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    for name in ("model.best.pth", "model.ema.pth"):
        model.load_state_dict(torch.load(exp_dir / name, weights_only=True)["state_dict"])


def test_sync_batchnorm_on_cpus_is_one_sentence_before_anything_is_written(tmp_path):
    folder = _fresh(tmp_path)
    result = _train(folder, [sys.executable, TRAIN_PY, "config.py", "--set", "trainer.sync_batchnorm=True"])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: field 'trainer.sync_batchnorm': torch's SyncBatchNorm runs on GPUs only")
    )
    assert not (folder / "experiments").exists()


POWER_CUT = """import os
import lightning as L


class PowerCut(L.Callback):
    # at the end of epoch 2, after its row of metrics.csv and before its checkpoint, in every process
    def on_train_epoch_end(self, trainer, module):
        if os.environ.get("POWER_CUT") and trainer.current_epoch + 1 == 2:
            raise RuntimeError("power cut")

"""


def test_resume_on_two_processes_continues_an_interrupted_two_process_run(tmp_path):
    folder = _fresh(tmp_path)
    config = POWER_CUT + CONFIG.replace("epochs=2", "epochs=3")
    (folder / "config.py").write_text(
        config.replace("    seed=0,\n", "    seed=0,\n    callbacks=[PowerCut()],\n")
    )
    env = dict(os.environ, ROOT_PATH=str(folder / "data"), POWER_CUT="1")
    cut = subprocess.run(
        [sys.executable, TRAIN_PY, "config.py", *DDP],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cut.returncode != 0 and "power cut" in cut.stderr
    exp_dir = folder / "experiments" / "ddp"
    assert list(pd.read_csv(exp_dir / "metrics.csv")["epoch"]) == [1, 2]  # epoch 2 has no checkpoint
    resumed = _train(folder, [sys.executable, TRAIN_PY, "config.py", "--resume", *DDP])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = pd.read_csv(exp_dir / "metrics.csv")
    assert list(rows["epoch"]) == [1, 2, 3] and list(rows["step"]) == [4, 8, 12]
    assert [p.name for p in (folder / "experiments").iterdir() if not p.name.startswith(".")] == ["ddp"]
    assert "| test |" in (exp_dir / "report.md").read_text()
    assert resumed.stdout.count("experiment folder:") == 1
