"""One writer per experiment folder: an OS-level lock (`flock` through the filelock package, so a killed
process releases it by itself) taken before anything in the folder is moved aside or written, by
training (also `--resume`), range tests, `swa.py`, `export.py` and each trial of a sweep. A second run
of the same experiment stops with one sentence naming the holder; nothing of the first is touched."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from filelock import FileLock, Timeout

from mlic.utils.errors import MlicError, WriteError
from mlic.utils.io import os_error_cause
from mlic.utils.ranks import is_rank_zero

HELD: set[Path] = set()  # the folders this process holds: a nested call (a range test in a run) holds on


class ExperimentBusy(MlicError):
    """Another process is writing the experiment folder."""


def lock_paths(exp_dir: Path) -> tuple[Path, Path]:
    """The lock file and the note of who holds it, beside the experiment folder (not in it: a new run
    moves an earlier folder aside, and the lock must stay where the next run looks)."""
    return exp_dir.parent / f".{exp_dir.name}.lock", exp_dir.parent / f".{exp_dir.name}.lock.json"


def unwritable(exp_dir: Path, e: OSError) -> WriteError:
    """The sentence for an experiment folder that cannot be made (read-only, a file in the path)."""
    return WriteError(
        f"cannot create the experiment folder {exp_dir}: {os_error_cause(e)}; set output_dir to a folder "
        f"you can write (--set output_dir=...)"
    )


def _holder(note: Path) -> str:
    try:
        who = json.loads(note.read_text(encoding="utf-8"))
        return f"PID {who['pid']} on {who['host']} since {who['since']} ({who['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


@contextlib.contextmanager
def experiment_lock(exp_dir: Path, create: bool = True) -> Iterator[None]:
    """Hold the experiment's lock for the block; raise `ExperimentBusy` at once when another process
    holds it. With several processes (DDP) only the first takes it: the others write through it. With
    `create` False (a command that reads an existing experiment) a missing folder is not made for the
    lock: the block runs unlocked and says itself what is missing."""
    key = exp_dir.resolve()
    lock_file, note = lock_paths(exp_dir)
    if not is_rank_zero() or key in HELD or not (create or exp_dir.is_dir()):
        yield
        return
    lock = FileLock(lock_file, timeout=0)
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        raise ExperimentBusy(
            f"experiment {exp_dir} is being written by another run: {_holder(note)}; wait for it to end, "
            f"or give this run another experiment_name (--set experiment_name=...)"
        ) from None
    except OSError as e:  # (Timeout is one too: it comes first)
        raise unwritable(exp_dir, e) from None
    try:
        who = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[:200],
        }
        note.write_text(json.dumps(who), encoding="utf-8")
        HELD.add(key)
        yield
    finally:
        HELD.discard(key)
        note.unlink(missing_ok=True)
        lock.release()


__all__ = ["ExperimentBusy", "experiment_lock", "lock_paths", "unwritable"]
