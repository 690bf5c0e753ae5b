"""What a run ran on: library versions, devices, the config's git commit and the command line.

Logged as one block when a run starts (`Config(log_environment=False)` hides it) and written into
`report.md`, so a result can be traced to the code and the machine that produced it.
"""

from __future__ import annotations

import importlib.metadata
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

LIBRARIES = ("mlic", "torch", "torchvision", "lightning", "timm", "albumentations", "torchmetrics", "numpy")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def devices() -> str:
    """The GPUs this process sees, by name, or the CPU's name and core count."""
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return ", ".join(f"cuda:{i} {n}" for i, n in enumerate(names))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "Apple MPS"
    return f"CPU: {_cpu_name()} ({torch.get_num_threads()} torch threads)"


def git_commit(path: Path | None) -> str | None:
    """The commit of the git repository holding `path` ("+ uncommitted changes" when the tree differs),
    or None outside a repository or without git."""
    if path is None:
        return None
    folder = Path(path).resolve().parent
    try:

        def git(*args: str) -> str:
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=True
            )
            return done.stdout.strip()

        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + (" + uncommitted changes" if dirty else "")


def environment(config_path: Path | None = None) -> dict[str, str]:
    """Versions, CUDA/cuDNN, devices, the config's git commit and the command line, as text."""
    cuda = torch.version.cuda or "none (CPU build)"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    facts = {
        "python": platform.python_version(),
        **{name: _version(name) for name in LIBRARIES},
        "torch": torch.__version__,  # with its build: 2.14.1+cu130
        "cuda": cuda if torch.cuda.is_available() or not torch.version.cuda else f"{cuda} (no GPU visible)",
        "cudnn": str(cudnn) if cudnn else "none",
        "devices": devices(),
        "host": platform.node(),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
    }
    commit = git_commit(config_path)
    if commit:
        facts["git commit"] = f"{commit} (the config's repository)"
    return facts


def environment_block(facts: dict[str, str]) -> str:
    """The log's block: libraries on one line, then one line per other fact."""
    libraries = ", ".join(f"{k} {facts[k]}" for k in ("python", *LIBRARIES) if k in facts)
    rest = [f"  {k}: {v}" for k, v in facts.items() if k not in ("python", *LIBRARIES)]
    return "\n".join([f"environment: {libraries}", *rest])


def environment_markdown(facts: dict[str, str]) -> str:
    """The report's section: one bullet per fact."""
    return "\n".join(f"- {k}: `{v}`" for k, v in facts.items())
