"""The pure snapshot builder: the bytes of pbx.toml and the tenant files in, a snapshot out.

Issue 14: reading files (``pbx.config.load``) is apart from deciding what they mean (here), so
the control panel can validate a save before writing anything, and tests can build snapshots
from bytes. Nothing here opens, lists or stats a file: the reader asks ``build_server`` which
folder and files pbx.toml names, looks at them, and hands their contents to ``build_snapshot``.
Either raises one ``ConfigError`` listing every problem found (DESIGN section 5).
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pbx.config.model import ConfigSnapshot, PhoneNumber, TenantConfig, TenantId
from pbx.config.problems import ConfigError, ConfigProblem
from pbx.config.server_rules import ServerSettings, check_named_files, load_server
from pbx.config.tables import Sink
from pbx.config.tenant_rules import TenantLoader

__all__ = ["FileContent", "ServerDraft", "Unreadable", "build_server", "build_snapshot"]


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A file that could not be read, with the system's reason ("No such file or directory")."""

    reason: str


FileContent = bytes | Unreadable


@dataclass(frozen=True, slots=True)
class ServerDraft:
    """pbx.toml checked on its own, and what the reader must look at next."""

    path: Path  # pbx.toml as given
    raw: bytes
    settings: ServerSettings
    errors: tuple[ConfigProblem, ...]
    warnings: tuple[ConfigProblem, ...]

    @property
    def tenants_dir(self) -> Path:
        """The folder of the tenant files (``tenants_dir``, relative to pbx.toml's folder)."""
        return self.path.parent / self.settings.tenants_dir

    @property
    def named_files(self) -> tuple[Path, ...]:
        """Files pbx.toml names that must exist (resolved): the reader says which do."""
        return tuple(entry.path for entry in self.settings.named_files)


def _parse_toml(sink: Sink, file: str, content: FileContent) -> dict[str, Any] | None:
    if isinstance(content, Unreadable):
        sink.error(file, "", "", "file.unreadable", reason=content.reason)
        return None
    try:
        return tomllib.loads(content.decode("utf-8"))
    except UnicodeDecodeError as exc:
        sink.error(file, "", "", "file.not_utf8", byte=exc.start)
    except tomllib.TOMLDecodeError as exc:
        hint = _quote_hint(content, str(exc))
        if hint is not None:
            line, text, suggestion = hint
            sink.error(
                file,
                "",
                "",
                "file.invalid_toml_quote",
                detail=exc,
                line=line,
                text=text,
                suggestion=suggestion,
            )
        else:
            sink.error(file, "", "", "file.invalid_toml", detail=exc)
    return None


# ``start = 8:00``, ``targets = 1001,1002``: a time or a list of targets written without quotes
# (TOML reads neither; ``08:00:00`` alone is a TOML time and needs no quotes).
_AT_LINE = re.compile(r"at line ([0-9]+)")
_UNQUOTED = re.compile(
    r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([0-9０-９][0-9０-９:：,、 ]*[0-9０-９])\s*(#.*)?"
)


def _quote_hint(content: bytes, detail: str) -> tuple[str, str, str] | None:
    """(line number, the line, the line with its value quoted) when the TOML error is on a line
    whose value is an unquoted time or list of targets (issue 19)."""
    found = _AT_LINE.search(detail)
    if found is None:
        return None
    lines = content.decode("utf-8").splitlines()
    number = int(found.group(1))
    if not 1 <= number <= len(lines):
        return None
    match = _UNQUOTED.fullmatch(lines[number - 1])
    if match is None:
        return None
    key, value = match.group(1), match.group(2)
    return str(number), lines[number - 1].strip(), f'{key} = "{value}"'


def build_server(path: Path, content: FileContent) -> ServerDraft:
    """Check pbx.toml (``content`` is its bytes); raises ``ConfigError`` if it is no TOML at all."""
    sink = Sink()
    path = Path(path)
    data = _parse_toml(sink, str(path), content)
    if data is None or isinstance(content, Unreadable):
        raise ConfigError(sink.errors)
    settings = load_server(sink, str(path), data, path.parent, path)
    return ServerDraft(path, content, settings, tuple(sink.errors), tuple(sink.warnings))


def build_snapshot(
    draft: ServerDraft,
    tenant_files: Mapping[Path, FileContent] | None,
    present: Collection[Path] = frozenset(),
    *,
    version: int = 1,
) -> ConfigSnapshot:
    """The snapshot of pbx.toml and its tenant files, or ``ConfigError`` listing every problem.

    ``tenant_files``: the ``*.toml`` files of ``draft.tenants_dir`` and their contents (None when
    that folder does not exist); ``present``: those of ``draft.named_files`` that exist.
    """
    sink = Sink()
    sink.errors.extend(draft.errors)
    sink.warnings.extend(draft.warnings)
    display = str(draft.path)
    base = draft.path.parent
    server = draft.settings.config
    check_named_files(sink, draft.settings.named_files, present)
    digest = hashlib.sha256()
    digest.update(f"{draft.path.name}\0{len(draft.raw)}\0".encode())
    digest.update(draft.raw)

    tenants: dict[TenantId, TenantConfig] = {}
    if tenant_files is None:
        sink.error(display, "", "tenants_dir", "tenants_dir.not_directory", path=draft.tenants_dir)
        tenant_files = {}
    elif not tenant_files:
        sink.warn(display, "", "tenants_dir", "tenants_dir.empty", path=draft.tenants_dir)
    for tenant_path in sorted(tenant_files):
        file = str(tenant_path)
        content = tenant_files[tenant_path]
        data = _parse_toml(sink, file, content)
        if data is None or isinstance(content, Unreadable):
            continue
        name = _relative_name(tenant_path, base)
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
        tenant_id = TenantId(tenant_path.stem)
        loader = TenantLoader(sink, file, tenant_id, tenant_path, server)
        tenants[tenant_id] = loader.load(data)

    by_number, by_domain, default = _index(sink, display, tenants)
    if sink.errors:
        raise ConfigError(sink.errors, sink.warnings)
    return ConfigSnapshot(
        version=version,
        digest=digest.hexdigest(),
        server=server,
        tenants=MappingProxyType(tenants),
        warnings=tuple(str(w) for w in sink.warnings),
        tenant_by_number=MappingProxyType(by_number),
        tenant_by_domain=MappingProxyType(by_domain),
        default_tenant=default,
        warning_details=tuple(sink.warnings),
    )


def _relative_name(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return Path(os.path.relpath(path, base)).as_posix()


def _index(
    sink: Sink, server_file: str, tenants: Mapping[TenantId, TenantConfig]
) -> tuple[dict[PhoneNumber, TenantId], dict[str, TenantId], TenantId | None]:
    """The cross-tenant indexes; a number or domain of two tenants, or two defaults, is an error."""
    by_number: dict[PhoneNumber, TenantId] = {}
    by_domain: dict[str, TenantId] = {}
    defaults: list[TenantId] = []
    for tid, tenant in tenants.items():
        file = str(tenant.path)
        for number in tenant.numbers:
            owner = by_number.setdefault(number, tid)
            if owner != tid:
                sink.error(
                    file,
                    f"number {number}",
                    "number",
                    "number.other_tenant",
                    number=number,
                    other=owner,
                    path=tenants[owner].path,
                )
        if tenant.domain:
            owner = by_domain.setdefault(tenant.domain, tid)
            if owner != tid:
                sink.error(
                    file,
                    f"tenant {tid}",
                    "domain",
                    "tenant.domain_other_tenant",
                    domain=tenant.domain,
                    other=owner,
                    path=tenants[owner].path,
                )
        if tenant.default:
            if defaults:
                sink.error(
                    file,
                    f"tenant {tid}",
                    "default",
                    "tenant.default_twice",
                    other=defaults[0],
                )
            defaults.append(tid)
    default: TenantId | None = None
    if defaults:
        default = defaults[0]
    elif len(tenants) == 1:
        default = next(iter(tenants))
    elif tenants:
        sink.warn(server_file, "", "", "tenants.no_default")
    return by_number, by_domain, default
