"""What a command checks before it loads the heavy libraries (torch, Lightning, timm): that the
environment variables its config reads through `env_path(...)` are set. Standard library only, so
`ROOT_PATH` missing is one sentence within a second, not after the imports (a minute on a loaded
machine)."""

from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path


def unset_message(name: str) -> str:
    """The sentence for an environment variable a config needs and the shell did not set."""
    script = Path(sys.argv[0]).name if sys.argv else ""
    script = script if script in ("swa.py", "sweep.py") else "train.py"
    return (
        f"{name} is not set: run as `{name}=/path/to/data python {script} CONFIG` "
        f"(the folder that holds the label CSVs and the images)"
    )


def add_overrides(parser: argparse.ArgumentParser, what: str = "a config field") -> None:
    """The `--set KEY=VALUE` option of train.py, swa.py and sweep.py (into `args.overrides`)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override {what}, e.g. --set data.batch_size=32 (repeatable)",
    )


def _called_name(call: ast.Call) -> str | None:
    """The variable an `env_path(...)` call reads ("ROOT_PATH" by default); None for another call or a
    name that is not written in the file."""
    func = call.func
    if (func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)) != "env_path":
        return None
    args = [*call.args, *(k.value for k in call.keywords if k.arg == "name")]
    if not args:
        return "ROOT_PATH"
    first = args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def _local_module(name: str, roots: list[Path]) -> Path | None:
    """The file of a module the config imports from next to it or from the working folder (the two
    places `load_config` lets it import from), e.g. `configs.base` -> configs/base.py."""
    parts = name.split(".")
    for root in roots:
        for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                return candidate
    return None


_CONDITIONAL = (ast.If, ast.IfExp, ast.Try, ast.BoolOp, ast.While, ast.Match)


def _unconditional(node: ast.AST):
    """Every node of the tree outside an if, a try or a boolean test: a config may read a variable only
    when it is set (`env_path() if "ROOT_PATH" in os.environ else "data"`), and that is not a stop."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, _CONDITIONAL):
            yield from _unconditional(child)


def env_reads(path: Path, seen: set[Path] | None = None) -> list[tuple[str, Path, int]]:
    """(variable, file, line) of every `env_path(...)` in a config file and in the local modules it
    imports (configs.base, configs.demo, ...; named by the line that imports them); a file that cannot be
    read or parsed gives none (loading the config says what is wrong with it)."""
    seen = set() if seen is None else seen
    if path in seen:
        return []
    seen.add(path)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return []
    roots = [Path.cwd(), path.parent]
    found: list[tuple[str, Path, int]] = []
    for node in _unconditional(tree):
        if isinstance(node, ast.Call) and (name := _called_name(node)):
            found.append((name, path, node.lineno))
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules = [node.module]
        for module in modules:
            local = None if module.split(".")[0] == "mlic" else _local_module(module, roots)
            if local is not None:  # named by the line of this file that imports it: the user's line
                found += [(name, path, node.lineno) for name, _, _ in env_reads(local.resolve(), seen)]
    return found


def stop_if_unset(config: str) -> None:
    """Exit with status 2 and one sentence when the config (a file, or an experiment folder's config.py)
    reads an environment variable that is not set."""
    path = Path(config)
    path = path / "config.py" if path.is_dir() else path
    for name, file, line in env_reads(path.resolve()):
        if not os.environ.get(name):
            where = os.path.relpath(file) if file.is_relative_to(Path.cwd()) else str(file)
            print(f"error: {where}:{line}: {unset_message(name)}", file=sys.stderr)
            raise SystemExit(2)


__all__ = ["add_overrides", "env_reads", "stop_if_unset", "unset_message"]
