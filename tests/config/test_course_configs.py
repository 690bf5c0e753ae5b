"""The configs shipped in configs/ load and validate as a user would run them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mlic import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.py") if p.name not in {"base.py", "__init__.py"})


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_loads_with_root_path(path, monkeypatch, tmp_path):
    monkeypatch.setenv("ROOT_PATH", str(tmp_path))
    monkeypatch.chdir(REPO)  # as in README: configs are run from the repository root
    for name in [m for m in sys.modules if m == "configs" or m.startswith("configs.")]:
        monkeypatch.delitem(sys.modules, name)  # as in a fresh process: ROOT_PATH is read again
    config = load_config(path)
    assert config.experiment_name == path.stem
    assert str(config.data.root) == str(tmp_path)
