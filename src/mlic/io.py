"""Atomic file writes: every artifact goes to a temporary name first and is renamed into place."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; artifacts get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write a JSON file atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """`torch.save` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call `writer(tmp_path)` and move the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def set_aside(path: Path) -> Path:
    """Rename an existing file to `<stem>.<date-time><suffix>` (a folder to `<name>.<date-time>`), never
    over another, and return the new path."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    # a folder gets the stamp at the end of its name, a file before its extension
    stem, suffix = (path.name, "") if path.is_dir() else (path.stem, path.suffix)
    target = path.with_name(f"{stem}.{stamp}{suffix}")
    n = 1
    while target.exists():
        target = path.with_name(f"{stem}.{stamp}-{n}{suffix}")
        n += 1
    path.rename(target)
    return target
