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
