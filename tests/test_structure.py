"""The package's shape (docs/design.md#layers): subpackages in layers, each importing only the layers
below it; no import circle; no import inside a function except of an optional dependency; no private
name of another module; no module over 400 lines and no function over 60; `import mlic.config` loads
no heavy library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mlic"

# the layers, lowest first; a subpackage imports its own layer's modules and those of lower layers
LAYERS = [
    {"utils"},
    {"metrics", "losses"},
    {"tasks"},
    {"config"},
    {"data"},
    {"models"},
    {"experiment"},
    {"engine"},
    {"evaluate"},
    {"train"},
    {"deploy", "demo"},
]
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}
# the command modules on top (`python -m mlic.compare`, `python -m mlic.audit`, ...) and the package itself
TOP = {"mlic", "mlic.audit", "mlic.compare", "mlic.report", "mlic.split"}
# imported inside a function on purpose: extras a user may not have installed
OPTIONAL = {"onnx", "onnxruntime", "onnxscript", "optuna"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}


def _imported(name: str, tree: ast.AST) -> list[tuple[str, ast.ImportFrom | ast.Import]]:
    """(the mlic module imported, the statement) of every import of `name`'s module, type-only ones too."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlic"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.append((full if full in MODULES else node.module, node))
        elif isinstance(node, ast.Import):
            out += [(a.name, node) for a in node.names if a.name.startswith("mlic")]
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return RANK.get(parts[1]) if len(parts) > 1 else None


def test_every_subpackage_is_in_a_layer():
    packages = {name.split(".")[1] for name in MODULES if name not in TOP}
    assert packages == set(RANK), f"add new subpackages to LAYERS: {packages ^ set(RANK)}"


def test_each_layer_imports_only_itself_and_the_layers_below():
    wrong = []
    for name, tree in TREES.items():
        own = _layer(name)
        if name in TOP:
            continue
        for target, _ in _imported(name, tree):
            other = _layer(target)
            same_layer_other_package = other == own and target.split(".")[1] != name.split(".")[1]
            if other is None or other > own or same_layer_other_package:
                wrong.append(f"{name} imports {target}")
    assert not wrong, wrong


def test_no_import_circle():
    graph = {
        name: {t for t, _ in _imported(name, tree) if t in MODULES and t != name}
        for name, tree in TREES.items()
    }
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            circle = visit(start, [start])
            assert circle is None, " -> ".join(circle)


def test_no_import_inside_a_function_except_optional_dependencies():
    inner = []
    for name, tree in TREES.items():
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Import):
                    roots = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    roots = [(node.module or "").split(".")[0]]
                else:
                    continue
                inner += [f"{name}.{func.name} imports {r}" for r in roots if r not in OPTIONAL]
    assert not inner, inner


def test_no_private_name_of_another_module():
    used = []
    for name, tree in TREES.items():
        aliases = {}  # local name -> mlic module, for `module._name`
        for target, node in _imported(name, tree):
            for alias in node.names:
                if isinstance(node, ast.ImportFrom) and alias.name.startswith("_"):
                    used.append(f"{name} imports {node.module}.{alias.name}")
                if target in MODULES:
                    aliases[alias.asname or alias.name.split(".")[-1]] = target
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                used.append(f"{name} reads {aliases[node.value.id]}.{node.attr}")
    assert not used, used


def test_no_module_over_400_lines_and_no_function_over_60():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    long = [f"{name}: {size} lines" for name, size in sizes.items() if size > MAX_MODULE_LINES]
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long


@pytest.mark.parametrize("module", ["mlic", "mlic.config"])
def test_importing_the_config_layer_loads_no_heavy_library(module):
    heavy = ["lightning", "matplotlib", "sklearn", "pandas", "albumentations", "cv2", "timm"]
    code = f"import sys, {module}; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "", f"import {module} loads {loaded.strip()}"


def test_the_import_paths_of_earlier_releases_still_find_their_modules():
    """A config (or the config.py copy of an experiment trained before the layers) keeps working."""
    code = (
        "from mlic.augment import InsertBackground\n"
        "from mlic.callbacks import AugmentationSchedule\n"
        "from mlic.config import Config, apply_override\n"
        "from mlic.stages import run\n"
        "import mlic.checkpoints, mlic.experiment.checkpoints\n"
        "assert mlic.checkpoints is mlic.experiment.checkpoints\n"
        "assert mlic.experiment.checkpoints.__spec__.name == 'mlic.experiment.checkpoints'\n"
        "print(InsertBackground.__module__, AugmentationSchedule.__module__, run.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["mlic.data.augment", "mlic.train.callbacks", "mlic.train.stages"]
