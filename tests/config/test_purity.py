"""pbx/config turns files into values: no event loop, sockets, database or clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[2] / "pbx" / "config"
FORBIDDEN = {"asyncio", "socket", "selectors", "aiosqlite", "sqlite3", "threading", "uvloop"}


@pytest.mark.parametrize("path", sorted(CONFIG.glob("*.py")), ids=lambda p: p.name)
def test_config_module_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    bad = {m for m in imported if m.split(".")[0] in FORBIDDEN}
    assert not bad, f"{path.name} imports {sorted(bad)}"
    upward = {m for m in imported if m.startswith(("pbx.sip", "pbx.routing", "pbx.media"))}
    assert not upward, f"{path.name} imports {sorted(upward)}"


# The builder and the rules read no files (issue 14): the reader (load.py) hands them bytes.
PURE = ("build.py", "server_rules.py", "tenant_rules.py", "tables.py", "problems.py", "model.py")
FILE_CALLS = {
    "open",
    "read_bytes",
    "read_text",
    "write_bytes",
    "write_text",
    "glob",
    "iterdir",
    "is_file",
    "is_dir",
    "exists",
    "stat",
    "listdir",
    "scandir",
}


@pytest.mark.parametrize("name", PURE)
def test_builder_modules_touch_no_files(name: str) -> None:
    tree = ast.parse((CONFIG / name).read_text(encoding="utf-8"))
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                called.add(func.attr)
            elif isinstance(func, ast.Name):
                called.add(func.id)
    assert not called & FILE_CALLS, f"{name} calls {sorted(called & FILE_CALLS)}"
