"""Reading a config file: import it, apply `--set` overrides, validate every field, explain mistakes;
and the copy of it written beside a run."""

from __future__ import annotations

import ast
import difflib
import hashlib
import os
import pprint
import re
import sys
import traceback
import types
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from mlic.config.schema import SWA, Config, ConfigSource, Data, LRFinder, Model, Stage, apply_override
from mlic.config.validation import RENAMED, validate
from mlic.utils.errors import ConfigError


def _config_line(exc: BaseException, path: Path) -> str:
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f"{path}:{lines[-1]}" if lines else str(path)


_UNEXPECTED = re.compile(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")


def _explain_type_error(exc: TypeError) -> str:
    match = _UNEXPECTED.search(str(exc))
    if not match:
        return f"TypeError: {exc}"
    cls_name, arg = match.groups()
    classes = {
        "Config": Config,
        "Data": Data,
        "Model": Model,
        "Stage": Stage,
        "LRFinder": LRFinder,
        "SWA": SWA,
    }
    cls = classes.get(cls_name)
    if cls is None:
        return f"TypeError: {exc}"
    names = [f.name for f in fields(cls)]
    hint = difflib.get_close_matches(arg, names, n=1)
    hint_text = f" (did you mean '{hint[0]}'?)" if hint else ""
    if (cls_name, arg) in RENAMED:
        hint_text = f" ({RENAMED[cls_name, arg]})"
    return f"{cls_name}() has no field '{arg}'{hint_text}; its fields are: {', '.join(names)}"


def _nearest_file(path: Path) -> str:
    """' (did you mean ...?)' naming the closest config file in the folder it names, or ''."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        return ""
    names = sorted(p.name for p in folder.glob("*.py"))
    hint = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return f" (did you mean {folder / hint[0]}?)" if hint else ""


def _import_file(path: Path) -> types.ModuleType:
    source = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"mlic_config_{stem}_{digest}"
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    extra = [str(Path.cwd()), str(path.resolve().parent)]
    added = [p for p in extra if p not in sys.path]
    sys.path[:0] = added
    try:
        exec(compile(tree, str(path), "exec"), module.__dict__)
    except ConfigError as e:
        raise ConfigError(f"{_config_line(e, path)}: {e}") from None
    except TypeError as e:
        raise ConfigError(f"{_config_line(e, path)}: {_explain_type_error(e)}") from None
    except Exception as e:  # noqa: BLE001 - any error in user code is reported with its line
        raise ConfigError(f"{_config_line(e, path)}: {type(e).__name__}: {e}") from None
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)
    return module


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Config:
    """Import the config file at `path`, apply `--set` overrides and validate the result."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; pass a Python file that defines `config`")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist{_nearest_file(path)}")
    if path.suffix != ".py":
        raise ConfigError(f"config file {path} is not a Python file (.py); pass one that defines `config`")
    module = _import_file(path)
    if not hasattr(module, "config"):
        raise ConfigError(f"{path} does not define `config`; end it with `config = Config(...)`")
    config = module.config
    if not isinstance(config, Config):
        raise ConfigError(f"{path}: `config` must be a mlic.Config, got {type(config).__name__}")
    for assignment in overrides:
        apply_override(config, assignment)
    validate(config, str(path))
    config.source = ConfigSource(path, path.read_text(encoding="utf-8"), tuple(overrides))
    return config


def config_copy_text(config: Config) -> str:
    """The text saved as `config.py` beside a run: the file that ran plus its `--set` overrides."""
    if config.source is None:
        lines = pprint.pformat(config, width=100).splitlines()
        return "# config built in Python, not from a file:\n" + "".join(f"# {line}\n" for line in lines)
    # read when the config was loaded: the file may be the copy inside a folder a rerun moves aside
    text, overrides = config.source.text, config.source.overrides
    if overrides:
        text += "\n# --set overrides given on the command line:\nfrom mlic.config import apply_override\n\n"
        for assignment in overrides:
            text += f"apply_override(config, {assignment!r})\n"
    return text


__all__ = ["load_config", "validate", "config_copy_text"]
