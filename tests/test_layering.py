"""The pure cores import no I/O and read no clock; imports only point down (docs/design.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "pbx"

PURE_FILES = sorted(
    [
        *(ROOT / "sip").glob("*.py"),
        *(ROOT / "routing").glob("*.py"),
        *(ROOT / "media").glob("*.py"),
    ]
)
# Adapters: the asyncio edge of each package.
ADAPTERS = {"transport.py", "relay.py", "recorder.py", "player.py"}

FORBIDDEN_MODULES = {
    "asyncio",
    "socket",
    "selectors",
    "aiosqlite",
    "sqlite3",
    "threading",
    "uvloop",
}
FORBIDDEN_CALLS = {("time", "time"), ("time", "monotonic"), ("datetime", "now"), ("date", "today")}
FORBIDDEN_PROJECT_IMPORTS = {
    "routing": ("pbx.sip", "pbx.media", "pbx.store", "pbx.b2bua", "pbx.server"),
    "sip": ("pbx.media", "pbx.routing", "pbx.store", "pbx.b2bua", "pbx.server"),
    "media": ("pbx.routing", "pbx.store", "pbx.b2bua", "pbx.server"),
}


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path",
    [p for p in PURE_FILES if p.name not in ADAPTERS],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_pure_module_touches_no_io_and_reads_no_clock(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = _imports(tree)
    bad = {m for m in imported if m.split(".")[0] in FORBIDDEN_MODULES}
    assert not bad, f"{path} imports {sorted(bad)}"
    package = path.parent.name
    wrong = {m for m in imported if m.startswith(FORBIDDEN_PROJECT_IMPORTS[package])}
    assert not wrong, f"{path} imports upward/sideways: {sorted(wrong)}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) not in FORBIDDEN_CALLS, (
                f"{path}:{node.lineno} reads the clock ({node.value.id}.{node.attr})"
            )


def test_layering_check_sees_the_cores() -> None:
    assert any(p.name == "message.py" for p in PURE_FILES)
