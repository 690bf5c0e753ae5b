"""Versions and run metadata: one block in the log as a run starts, and a section of report.md."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import lightning
import pytest
import timm
import torch

from mlic import load_config
from mlic.train.stages import run


def write_config(folder: Path, data: Path, **fields: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    extra = "".join(f", {k}={v!r}" for k, v in fields.items())
    path = folder / "env_config.py"
    path.write_text(
        "from mlic import Config, Data, Model, Stage\n"
        f"config = Config(experiment_name='env', data=Data(root={str(data)!r}, img_size=(32, 32), "
        "batch_size=8, num_workers=0), model=Model(name='test_resnet', pretrained=False), "
        "stages=[Stage('full', epochs=1)], trainer=dict(accelerator='cpu', enable_progress_bar=False), "
        f"seed=0{extra})\n"
    )
    return path


def git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True
    ).stdout


def test_the_log_and_report_name_versions_devices_commit_and_command(dataset: Path, tmp_path: Path, caplog):
    repo = tmp_path / "project"
    path = write_config(repo, dataset)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "config")
    commit = git(repo, "rev-parse", "--short=12", "HEAD").strip()
    with caplog.at_level(logging.INFO, logger="mlic"):
        exp_dir = run(load_config(path)).exp_dir
    block = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("environment:"))
    for text in (
        f"torch {torch.__version__}",
        f"lightning {lightning.__version__}",
        f"timm {timm.__version__}",
    ):
        assert text in block
    assert "devices: CPU" in block and f"git commit: {commit} (the config's repository)" in block
    report = (exp_dir / "report.md").read_text()
    section = report[report.index("## Environment") :]
    assert f"- torch: `{torch.__version__}`" in section
    assert f"- git commit: `{commit} (the config's repository)`" in section
    assert "- command: `" in section and "- cuda: `" in section


def test_uncommitted_changes_are_said_and_log_environment_false_hides_the_block(
    dataset: Path, tmp_path: Path, caplog
):
    repo = tmp_path / "project"
    path = write_config(repo, dataset)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "config")
    write_config(repo, dataset, log_environment=False)  # changed since the commit
    with caplog.at_level(logging.INFO, logger="mlic"):
        exp_dir = run(load_config(path)).exp_dir
    assert not [r for r in caplog.records if r.getMessage().startswith("environment:")]
    assert "+ uncommitted changes (the config's repository)`" in (exp_dir / "report.md").read_text()


def test_a_config_outside_a_repository_has_no_commit_line(dataset: Path, tmp_path: Path):
    path = write_config(tmp_path / "loose", dataset)
    report = (run(load_config(path)).exp_dir / "report.md").read_text()
    assert "## Environment" in report and "git commit" not in report


@pytest.fixture(autouse=True)
def _no_parent_repository(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """tmp_path must not sit inside another repository for the 'outside a repository' case."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
