"""The pure builder (issue 14): bytes in, a snapshot or ``ConfigError`` out, no file touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx.config.build import Unreadable, build_server, build_snapshot
from pbx.config.load import load_config
from pbx.config.model import TenantId
from pbx.config.problems import ConfigError
from tests.config.conftest import SERVER, Writer, tenant

# Nothing exists here: the builder must not need it to.
ROOT = Path("/nonexistent-pbx-config")
PBX_TOML = ROOT / "pbx.toml"
ACME = ROOT / "tenants" / "acme.toml"


def test_a_snapshot_from_bytes_alone() -> None:
    draft = build_server(PBX_TOML, SERVER.encode())
    assert draft.tenants_dir == ROOT / "tenants"
    assert draft.named_files == ()
    snapshot = build_snapshot(draft, {ACME: tenant().encode()}, version=2)
    assert snapshot.version == 2
    assert list(snapshot.tenants) == ["acme"]
    assert snapshot.tenants[TenantId("acme")].path == ACME
    assert snapshot.server.path == PBX_TOML


def test_the_builder_and_the_reader_agree(write: Writer) -> None:
    path = write()
    acme = path.parent / "tenants" / "acme.toml"
    built = build_snapshot(build_server(path, path.read_bytes()), {acme: acme.read_bytes()})
    assert built == load_config(path)


def test_named_files_are_asked_for_and_their_presence_given() -> None:
    text = SERVER + '[panel]\ntls_certificate = "tls/c.pem"\ntls_key = "/etc/k.pem"\n'
    draft = build_server(PBX_TOML, text.encode())
    assert draft.named_files == (ROOT / "tls" / "c.pem", Path("/etc/k.pem"))
    snapshot = build_snapshot(draft, {ACME: tenant().encode()}, frozenset(draft.named_files))
    assert snapshot.server.panel.tls_certificate == ROOT / "tls" / "c.pem"
    with pytest.raises(ConfigError) as info:
        build_snapshot(draft, {ACME: tenant().encode()}, {Path("/etc/k.pem")})
    assert [(p.entity, p.field) for p in info.value.problems] == [("[panel]", "tls_certificate")]


def test_unreadable_files_are_problems() -> None:
    with pytest.raises(ConfigError) as info:
        build_server(PBX_TOML, Unreadable("Permission denied"))
    assert [str(p) for p in info.value.problems] == [
        f"{PBX_TOML}: cannot read the file: Permission denied"
    ]
    draft = build_server(PBX_TOML, SERVER.encode())
    with pytest.raises(ConfigError) as info:
        build_snapshot(draft, {ACME: Unreadable("Is a directory")})
    assert [str(p) for p in info.value.problems] == [
        f"{ACME}: cannot read the file: Is a directory"
    ]


def test_no_tenants_folder_is_given_as_none() -> None:
    draft = build_server(PBX_TOML, SERVER.encode())
    with pytest.raises(ConfigError) as info:
        build_snapshot(draft, None)
    assert [(p.field, p.message) for p in info.value.problems] == [
        ("tenants_dir", f'"{ROOT / "tenants"}" is not a directory')
    ]


def test_server_problems_come_before_tenant_problems() -> None:
    draft = build_server(PBX_TOML, (SERVER + "[calls]\nmax_forward_hops = 0\n").encode())
    assert [p.field for p in draft.errors] == ["max_forward_hops"]
    with pytest.raises(ConfigError) as info:
        build_snapshot(draft, {ACME: b"[tenant\n"})
    assert [p.file for p in info.value.problems] == [str(PBX_TOML), str(ACME)]
