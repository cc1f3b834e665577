"""Layering, as an allow-list: what each pure module may import (docs/design.md section 4).

Pure modules import only the standard library modules listed for their layer and the project
modules below them; they read no clock, draw no randomness of their own (``pbx.sip.entropy`` is
the one source, and it is injected into nothing else) and read no files. Imports under
``if TYPE_CHECKING:`` name types only and are not counted. Adapters (asyncio, sockets, the
database) are listed so that a new module is pure unless it says otherwise.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "pbx"

# Standard library every pure module may use: values, text, containers, typing.
BASE = {
    "__future__",
    "collections",
    "collections.abc",
    "dataclasses",
    "enum",
    "functools",
    "itertools",
    "heapq",
    "math",
    "re",
    "struct",
    "types",
    "typing",
}
# Per layer: the extra standard library modules, and the project modules it may import.
LAYERS: dict[str, tuple[set[str], tuple[str, ...]]] = {
    "sip": ({"hashlib", "hmac", "base64"}, ("pbx.sip.", "pbx.errors", "pbx.immutable")),
    "routing": (
        {"datetime", "zoneinfo", "holidays"},
        ("pbx.routing.", "pbx.config.model", "pbx.numbers", "pbx.errors", "pbx.immutable"),
    ),
    "media": (
        {"array", "sys", "io", "wave", "pathlib", "ipaddress", "base64", "binascii", "json"},
        ("pbx.media.", "pbx.errors"),
    ),
    "call": (
        set(),
        (
            "pbx.call.",
            "pbx.clock",
            "pbx.config.model",
            "pbx.errors",
            "pbx.immutable",
            "pbx.media.anchor",
            "pbx.media.g711",
            "pbx.media.latch",
            "pbx.media.sdp",
            "pbx.numbers",
            "pbx.registrar",
            "pbx.routing.",
            "pbx.sip.build",
            "pbx.sip.dialog",
            "pbx.sip.edge",  # issue #20: a binding's Path, its first hop
            "pbx.sip.message",
            "pbx.sip.parse",
            "pbx.sip.transaction",
        ),
    ),
    "registrar.py": (
        {"email.utils", "urllib.parse"},
        ("pbx.config.model", "pbx.errors", "pbx.immutable", "pbx.sip.digest", "pbx.sip.message"),
    ),
    "security.py": (set(), ("pbx.config.model", "pbx.immutable")),
    # Keep-alive checks of registered contacts (issue 15): schedule and verdicts, time passed in.
    "keepalive.py": ({"heapq", "math", "hashlib"}, ("pbx.immutable",)),
    "numbers.py": ({"unicodedata"}, ()),
    "clock.py": ({"datetime"}, ()),
    # The control panel's pure parts: what an admin types, the sign-in throttle.
    "panel/forms.py": ({"unicodedata"}, ("pbx.errors",)),
    "panel/signin.py": ({"ipaddress"}, ()),
    # 着信設定: the weekly timeline picture, the rule and test-call forms.
    "panel/timeline.py": ({"html"}, ("pbx.config.model",)),
    "panel/inbound.py": (
        {"unicodedata", "datetime", "zoneinfo"},
        ("pbx.config.model", "pbx.panel.forms", "pbx.panel.timeline"),
    ),
    # Live status and phone setup: view models over the config and the registrar's bindings.
    "panel/status.py": (
        {"unicodedata", "zoneinfo", "datetime"},
        ("pbx.config.model", "pbx.registrar"),
    ),
    "panel/phone_setup.py": ({"ipaddress"}, ("pbx.config.model",)),
    # 通話履歴 (call history): its filters and page SQL as text, the trace in words.
    "panel/history_query.py": ({"datetime", "zoneinfo", "unicodedata"}, ("pbx.errors",)),
    "panel/history_words.py": (set(), ()),
}
# The asyncio edge: these may do I/O (and are not checked here).
ADAPTERS = {
    "sip/transport.py",
    "sip/tls.py",
    "media/relay.py",
    "media/srtp.py",
    "media/recorder.py",
    "media/player.py",
    "media/calls.py",
    "media/ng.py",  # issue #20: the ng client (UDP); its message functions are pure
    "media/rtpengine.py",
    "media/kernel.py",  # issue #21: runs nft; what it runs is media/kernelflows.py's
}
# Deliberate exceptions, each with its reason.
EXCEPTIONS = {
    # The one randomness source: the operating system's CSPRNG, drawn in blocks.
    ("sip/entropy.py", "os"),
    # read_wav reads a prompt file: a convenience beside the pure parse_wav.
    ("media/wav.py", "read_bytes"),
}
FORBIDDEN_CALLS = {
    ("time", "time"),
    ("time", "monotonic"),
    ("datetime", "now"),
    ("date", "today"),
    ("Path", "read_text"),
    ("Path", "read_bytes"),
}


def pure_modules() -> list[tuple[Path, str]]:
    out = []
    for package in ("sip", "routing", "media", "call"):
        for path in sorted((ROOT / package).glob("*.py")):
            if f"{package}/{path.name}" not in ADAPTERS:
                out.append((path, package))
    for name in (
        "registrar.py",
        "security.py",
        "keepalive.py",
        "numbers.py",
        "clock.py",
        "panel/forms.py",
        "panel/signin.py",
        "panel/timeline.py",
        "panel/inbound.py",
        "panel/status.py",
        "panel/phone_setup.py",
    ):
        out.append((ROOT / name, name))
    return out


def _runtime_imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue  # names types only
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    visit([child])

    visit(tree.body)
    return names


@pytest.mark.parametrize(
    ("path", "layer"), pure_modules(), ids=lambda v: v.name if isinstance(v, Path) else ""
)
def test_pure_module_imports_only_what_its_layer_allows(path: Path, layer: str) -> None:
    stdlib, project = LAYERS[layer]
    rel = f"{path.parent.name}/{path.name}"
    for module in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if module.startswith("pbx"):
            ok = any(module == p.rstrip(".") or module.startswith(p) for p in project)
            assert ok, f"{rel} imports {module}, which layer {layer!r} may not"
        else:
            allowed = module in BASE or module in stdlib or (rel, module) in EXCEPTIONS
            assert allowed, f"{rel} imports {module}, which layer {layer!r} may not"


@pytest.mark.parametrize(
    ("path", "layer"), pure_modules(), ids=lambda v: v.name if isinstance(v, Path) else ""
)
def test_pure_module_reads_no_clock_and_no_file(path: Path, layer: str) -> None:
    rel = f"{path.parent.name}/{path.name}"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            call = (node.value.id, node.attr)
            assert call not in FORBIDDEN_CALLS, f"{rel}:{node.lineno} calls {'.'.join(call)}"
        if isinstance(node, ast.Attribute) and node.attr in ("read_text", "read_bytes"):
            assert (rel, node.attr) in EXCEPTIONS, f"{rel}:{node.lineno} reads a file"
        if isinstance(node, ast.Name) and node.id == "open":
            pytest.fail(f"{rel}:{node.lineno} opens a file")


def test_layering_check_sees_every_layer() -> None:
    layers = {layer for _, layer in pure_modules()}
    assert {"sip", "routing", "media", "call", "registrar.py", "security.py"} <= layers
    assert any(p.name == "core.py" for p, _ in pure_modules())


def test_an_adapter_import_in_a_pure_module_is_caught(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("import asyncio\nfrom pbx.store import Store\n", encoding="utf-8")
    imported = _runtime_imports(ast.parse(module.read_text(encoding="utf-8")))
    stdlib, project = LAYERS["call"]
    assert "asyncio" not in BASE | stdlib
    assert not any("pbx.store".startswith(p) for p in project)
    assert imported == {"asyncio", "pbx.store"}
