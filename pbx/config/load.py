"""Read ``pbx.toml`` and ``tenants/*.toml`` and build the immutable ``ConfigSnapshot``.

This module is the reading half (issue 14): it opens, lists and stats files, and hands their
bytes to the pure builder (``pbx.config.build``), where every rule lives (the server's in
``server_rules``, a tenant file's in ``tenant_rules``). ``overrides`` lets a caller (the control
panel validating a save) put other bytes in place of a file, or take a file away, without
writing anything. Nothing here touches sockets or the event loop.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path

from pbx.config.build import FileContent, Unreadable, build_server, build_snapshot
from pbx.config.model import ConfigSnapshot
from pbx.config.problems import ConfigError, ConfigProblem

__all__ = ["ConfigError", "ConfigProblem", "load_config"]


class _Files:
    """The files as they would be with ``overrides`` applied (keys compared resolved)."""

    def __init__(self, overrides: Mapping[Path, bytes | None] | None) -> None:
        self.overrides = {Path(p).resolve(): data for p, data in (overrides or {}).items()}

    def read(self, path: Path) -> FileContent:
        key = path.resolve()
        if key in self.overrides:
            data = self.overrides[key]
            return data if data is not None else Unreadable(os.strerror(errno.ENOENT))
        try:
            return path.read_bytes()
        except OSError as exc:
            return Unreadable(exc.strerror or str(exc))

    def is_file(self, path: Path) -> bool:
        key = path.resolve()
        if key in self.overrides:
            return self.overrides[key] is not None
        return path.is_file()

    def tenant_files(self, folder: Path) -> list[Path] | None:
        """The ``*.toml`` files of ``folder`` (None when it is not a folder), overrides applied.

        An override for a ``*.toml`` file directly in the folder that is not on disk is a new
        tenant; an override of None takes a file away.
        """
        if not folder.is_dir():
            return None
        where = folder.resolve()
        found: dict[Path, Path] = {p.resolve(): p for p in folder.glob("*.toml")}
        for key in self.overrides:
            if key.suffix == ".toml" and key.parent == where and key not in found:
                found[key] = folder / key.name
        return sorted(p for key, p in found.items() if self.overrides.get(key, b"") is not None)


def load_config(
    path: Path, *, version: int = 1, overrides: Mapping[Path, bytes | None] | None = None
) -> ConfigSnapshot:
    """Read ``pbx.toml`` and its tenant files into a snapshot, or raise ``ConfigError``.

    ``overrides`` maps a file's path to the bytes to use instead of the file's (None: the file
    is taken as absent); a ``*.toml`` path in the tenants folder that is not on disk is loaded
    as a new tenant. Nothing is written.
    """
    files = _Files(overrides)
    path = Path(path)
    draft = build_server(path, files.read(path))
    listed = files.tenant_files(draft.tenants_dir)
    contents = {p: files.read(p) for p in listed} if listed is not None else None
    present = frozenset(p for p in draft.named_files if files.is_file(p))
    return build_snapshot(draft, contents, present, version=version)
