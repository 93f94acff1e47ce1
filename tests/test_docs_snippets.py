"""The documentation's examples against the code: a user copies them, so they must name things that exist.

Cheap static checks (no env is built, no model trained): every Python block of a page, read top to bottom as one
script, defines or imports every name it uses; every ``hindex_sb3...`` name a page mentions imports; every
``hindex ...`` command line of a page's shell blocks parses with the real argument parser (a renamed or removed
flag fails here rather than in a user's terminal).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# benchmarks.md and reliability.md are measurement records, not instructions
RECORDS = {"benchmarks.md", "reliability.md"}
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name not in RECORDS)]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
# dotted names in the prose that are not Python objects (a checkpoint format's name)
NOT_OBJECTS = {"hindex_sb3.adapted"}


def _blocks(page: Path, langs: set[str]) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(page.read_text()) if m.group(1) in langs]


def _undefined_names(source: str) -> set[str]:
    tree = ast.parse(source)
    defined, used = set(dir(builtins)), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else defined).add(node.id)
        elif isinstance(node, ast.alias):
            defined.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
    return used - defined


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted``, then walk the rest as attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_define_every_name_they_use(page: Path) -> None:
    source = "\n".join(_blocks(page, {"python"}))
    assert not _undefined_names(source), f"{page.name}: a Python example uses names it never defines or imports"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_import_existing_names(page: Path) -> None:
    tree = ast.parse("\n".join(_blocks(page, {"python"})))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hindex_sb3"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{page.name}: from {node.module} import {alias.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_dotted_package_name_in_the_prose_exists(page: Path) -> None:
    names = set(re.findall(r"hindex_sb3(?:\.[A-Za-z_]\w*)+", page.read_text())) - NOT_OBJECTS
    for name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as exc:
            pytest.fail(f"{page.name} names {name}, which does not exist: {exc}")


def _command_lines(page: Path) -> list[str]:
    """``hindex`` commands of the shell blocks, with the block's ``NAME="..."`` variables expanded (unquoted)."""
    lines = []
    for block in _blocks(page, {"bash", "sh", ""}):
        variables = dict(re.findall(r'^(\w+)="([^"]*)"', block, re.M))
        for line in block.replace("\\\n", " ").splitlines():
            for name, value in variables.items():
                line = line.replace(f"${name}", value)
            for part in line.split("&&"):
                if part.strip().startswith("hindex "):
                    lines.append(part.strip())
    return lines


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_hindex_command_lines_parse(page: Path) -> None:
    from hindex_sb3.cli import build_parser

    parser = build_parser()
    for line in _command_lines(page):
        try:
            parser.parse_args(shlex.split(line, comments=True)[1:])
        except SystemExit:
            pytest.fail(f"{page.name}: `{line}` does not parse")


def test_the_command_line_check_sees_the_readme_quick_start() -> None:
    """Guard the extraction itself: a regex that found nothing would let every page pass."""
    lines = _command_lines(ROOT / "README.md")
    assert any(line.startswith("hindex train door --encoder hindex --weights random") for line in lines)
    assert len(lines) >= 6


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#+\s+(.*)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_reach_a_file_and_heading(page: Path) -> None:
    for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path) if path else page
        assert target.exists(), f"{page.name} links to {link}: no such file"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"{page.name} links to {link}: no such heading"


def test_training_md_paper_table_matches_the_shipped_settings() -> None:
    """docs/training.md's per-task table is what ``hindex train`` fills in (it once called every reward dense)."""
    from hindex_sb3.runs import paper_settings, resolve_task
    from hindex_sb3.runs.paper import GENERIC

    text = (ROOT / "docs" / "training.md").read_text()
    table = text[text.index("| task | trajectories |") :].split("\n\n")[0].splitlines()[2:]
    fields = ("trajectories", "iterations", "num_demos", "ema_momentum", "horizon", "camera", "reward_type")
    for row in table:
        cells = [c.strip() for c in row.strip("|").split("|")]
        first = cells[0].split(" ")[0].split("/")[0].strip()
        settings = {**GENERIC, **paper_settings(resolve_task(first))}
        for field, cell in zip(fields, cells[1:], strict=True):
            assert str(settings[field]) == cell or float(settings[field]) == float(cell), (row, field)
