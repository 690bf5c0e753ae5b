"""README.md and docs/ stay true to the repository: short front door, links and anchors that resolve,
and only configs, scripts, make targets and options that exist. Reads files only: no training."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`([^`]+)`")
REPO_FILE = re.compile(
    r"(?<![\w/.])(?:configs|bench|notebooks|docs|tests)/[\w-]+(?:/[\w-]+)*\.(?:py|ipynb|md)\b"
)
SCRIPT = re.compile(r"\bpython3?\s+(?:-m\s+(mlic(?:\.\w+)+)|([\w./-]+\.py)\b)")
MAKE_TARGET = re.compile(r"(?:^|[\s;&|(])make\s+([a-z][\w-]*)")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
CLI_SOURCES = ["train.py", "swa.py", "sweep.py", "export.py", "predict.py", "src/mlic/**/*.py", "bench/*.py"]


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@cache
def split_page(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The page's prose lines and its fenced-code lines."""
    prose, code, in_code = [], [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
        elif in_code:
            code.append(line)
        else:
            prose.append(line)
    return tuple(prose), tuple(code)


def slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link in a heading anchors by its text
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def headings(path: Path) -> list[tuple[int, str]]:
    return [(len(m.group(1)), m.group(2)) for line in split_page(path)[0] if (m := HEADING.match(line))]


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, title in headings(path):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def links(path: Path) -> list[str]:
    prose = "\n".join(split_page(path)[0])
    return LINK.findall(INLINE_CODE.sub("", prose))


def code_snippets(path: Path) -> list[str]:
    """What a reader would type: fenced code lines and inline code spans."""
    prose, code = split_page(path)
    return [*code, *(span for line in prose for span in INLINE_CODE.findall(line))]


def is_external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target) is not None


@cache
def cli_options() -> frozenset[str]:
    """Every quoted `--option` string in the command-line scripts and the library behind them."""
    found = set()
    for pattern in CLI_SOURCES:
        for source in ROOT.glob(pattern):
            found.update(re.findall(r"[\"'](--[a-z][a-z0-9-]*)[\"']", source.read_text(encoding="utf-8")))
    return frozenset(found)


def test_readme_stays_a_short_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < MAX_README_LINES, f"README.md has {len(lines)} lines; move reference text to docs/"


def test_readme_has_a_table_of_contents_that_lists_every_section():
    prose = split_page(README)[0]
    start = next(
        (
            i
            for i, line in enumerate(prose[:40])
            if re.match(r"^#{2,3}\s+(table of )?contents\s*$", line, re.I)
        ),
        None,
    )
    assert start is not None, "README.md needs a '## Contents' section near the top"
    toc = []
    for line in prose[start + 1 :]:
        if HEADING.match(line):
            break
        toc.extend(LINK.findall(line))
    assert toc, "the Contents section lists no links"
    assert all(t.startswith("#") for t in toc), f"Contents links outside the page: {toc}"
    missing = [t for t in toc if t[1:] not in anchors(README)]
    assert not missing, f"Contents links to headings that do not exist: {missing}"
    sections = {slug(title) for level, title in headings(README) if level == 2}
    sections.discard(slug(prose[start].lstrip("#")))
    unlisted = sorted(sections - {t[1:] for t in toc})
    assert not unlisted, f"README sections missing from Contents: {unlisted}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_point_at_existing_files_and_headings(page):
    broken = []
    for target in links(page):
        if is_external(target):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading '#{anchor}' in {dest.relative_to(ROOT)}")
    assert not broken, f"{page_id(page)}: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README) if not is_external(t)}
    unlinked = [page_id(p) for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages README.md does not link: {unlinked}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_named_configs_notebooks_and_bench_scripts_exist(page):
    # `error: ...` lines quote what mlic prints for a user's own config, which is not in the repository
    text = "\n".join(
        line
        for line in page.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("error:")
    )
    missing = sorted({p for p in REPO_FILE.findall(text) if not (ROOT / p).is_file()})
    assert not missing, f"{page_id(page)} names files that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_commands_name_existing_scripts_and_modules(page):
    missing = set()
    for module, script in SCRIPT.findall(page.read_text(encoding="utf-8")):
        if module:
            rel = Path("src", *module.split("."))
            if not (ROOT / rel.with_suffix(".py")).is_file() and not (ROOT / rel / "__init__.py").is_file():
                missing.add(f"python -m {module}")
        elif not (ROOT / script).is_file():
            missing.add(f"python {script}")
    assert not missing, f"{page_id(page)} runs scripts that do not exist: {sorted(missing)}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_make_targets_exist(page):
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M))
    used = {t for snippet in code_snippets(page) for t in MAKE_TARGET.findall(snippet)}
    assert used <= targets, f"{page_id(page)} names make targets the Makefile lacks: {sorted(used - targets)}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_command_line_options_exist(page):
    used = set()
    for snippet in code_snippets(page):
        command = SCRIPT.search(snippet)
        if command:
            used.update(OPTION.findall(snippet[command.end() :]))
        elif snippet.startswith("--"):
            used.update(OPTION.findall(snippet))
    unknown = sorted(used - cli_options())
    assert not unknown, f"{page_id(page)} uses options no script defines: {unknown}"


def test_faults_names_every_notebook_that_runs_an_experiments_config():
    code_paragraph = next(
        p for p in (ROOT / "docs" / "faults.md").read_text().split("\n\n") if "is code." in p
    )
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        if "config.py" in code or "load_config" in code:
            assert f"notebooks/{notebook.name}" in code_paragraph, notebook.name
