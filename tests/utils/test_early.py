"""A config's environment variables are checked before the heavy libraries load: ROOT_PATH missing is one
sentence within a moment, naming the config's line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlic.utils.early import env_reads

REPO = Path(__file__).resolve().parents[2]


def test_reads_are_found_in_the_config_and_in_the_local_modules_it_imports(tmp_path: Path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "paths.py").write_text("from mlic import env_path\nDATA = env_path('DATA_DIR')\n")
    config = tmp_path / "config.py"
    config.write_text(
        "import os\n"
        "from mlic import env_path\n"
        "from shared.paths import DATA\n"
        "root = env_path()\n"
        "cache = env_path('CACHE') if 'CACHE' in os.environ else '/tmp'\n"  # read only when set
    )
    found = [(name, line) for name, _, line in env_reads(config)]
    assert sorted(found) == [("DATA_DIR", 3), ("ROOT_PATH", 4)]


@pytest.mark.parametrize("script", ["train.py", "swa.py", "sweep.py"])
def test_a_missing_root_path_stops_before_torch_loads(script: str):
    env = {k: v for k, v in os.environ.items() if k != "ROOT_PATH"}
    probe = (
        "import runpy, sys\n"
        f"sys.argv = [{script!r}, 'configs/train_full.py']\n"
        "try:\n"
        f"    runpy.run_path({script!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code, 'torch loaded' if 'torch' in sys.modules else 'torch not loaded')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env, check=False
    )
    assert done.stdout.strip() == "exit 2 torch not loaded", done.stdout + done.stderr[-2000:]
    assert done.stderr.startswith("error: configs/train_full.py:"), done.stderr
    assert f"ROOT_PATH=/path/to/data python {script} CONFIG" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
