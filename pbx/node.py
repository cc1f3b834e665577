"""This node's identity in the shared store (issue #20).

``[storage] node`` when set; otherwise a name made once, ``<hostname>-<8 hex digits>``, and kept
in ``<data_dir>/node-id`` so the node keeps it across restarts (crash recovery closes the open
call records of this name only). Two nodes must not share a data_dir, or they share the name.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from pbx.config.model import StorageSettings
from pbx.config.server_rules import NODE_NAME

NODE_FILE = "node-id"


def node_identity(storage: StorageSettings) -> str:
    """The configured name, else the one kept in ``data_dir`` (made and saved the first time)."""
    if storage.node is not None:
        return storage.node
    path = storage.data_dir / NODE_FILE
    try:
        kept = path.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        kept = ""
    if NODE_NAME.fullmatch(kept):
        return kept
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in ".-")[:40] or "pbx"
    name = f"{host}-{secrets.token_hex(4)}"
    _write_atomically(path, name + "\n")
    return name


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    temp.write_text(text, encoding="ascii")
    os.replace(temp, path)
