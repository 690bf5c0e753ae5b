"""Atomic file writes: every artifact goes to a temporary name in its own folder, is flushed to disk and
renamed into place, so a killed run never leaves a half-written file under an artifact's name; a write
that fails (no space, read-only) becomes one `WriteError` sentence naming the file and the cause."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mlic.utils.errors import WriteError

# what each errno means for a user who wanted a file written
CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENOENT: "its folder does not exist and cannot be created",
}
TMP_SUFFIX = ".tmp"


def os_error_cause(e: OSError) -> str:
    """What went wrong, in words: `no space left on the device`, `the file system is read-only`, ..."""
    return CAUSES.get(e.errno, e.strerror or str(e))


def _write_error(path: Path, e: BaseException) -> WriteError:
    if isinstance(e, OSError):
        cause = os_error_cause(e)
    else:  # torch's C++ writer reports a full disk as a RuntimeError ("file write failed")
        free = shutil.disk_usage(path.parent if path.parent.is_dir() else Path.cwd()).free
        cause = "no space left on the device" if free < 1 << 20 else str(e).splitlines()[0]
    return WriteError(f"cannot write {path}: {cause}; files written before are kept")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_path(path: str | os.PathLike) -> Path:
    """A new empty file beside `path`, hidden and named `.<name>.<random>.tmp` (what
    `remove_stale_temporaries` removes), for a writer that renames it onto `path` when done."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; artifacts get the usual permissions
    return Path(tmp)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; flush it to disk and rename it onto `path` only if the block
    succeeds. The temporary file is removed on failure; a failed write raises `WriteError`."""
    path = Path(path)
    tmp_path = temporary_path(path)
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.replace(tmp_path, path)
    except OSError as e:
        raise _write_error(path, e) from None
    except RuntimeError as e:
        if "write" not in str(e).lower():
            raise
        raise _write_error(path, e) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def move_into_place(tmp: Path, path: str | os.PathLike) -> None:
    """Flush a finished temporary file (`temporary_path`) to disk and rename it onto `path`."""
    try:
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise _write_error(Path(path), e) from None


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


def replace_keeping(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path | None:
    """Write `path` with `writer` like `write_with`, but keep an earlier file: it is renamed aside
    (`set_aside`) only once the new one is complete. Returns where the earlier file went (None: there
    was none)."""
    path = Path(path)
    aside = None
    with atomic_path(path) as tmp:
        writer(tmp)
        # on disk before the earlier file leaves its name (atomic_path's flush then finds it clean)
        _fsync(tmp)
        if path.exists():
            aside = set_aside(path)
    return aside


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (`.<name>.<random>.tmp`) a killed run left in `folder`; return them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    # `.*.tmp*` also finds `.model.tmp.ts`, `.model.tmp.pt2`, `.model.tmp.onnx`, left by earlier versions of export
    stale = [p for p in folder.glob(f".*{TMP_SUFFIX}*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


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
    try:
        path.rename(target)
    except OSError as e:
        raise _write_error(target, e) from None
    return target
