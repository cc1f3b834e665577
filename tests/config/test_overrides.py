"""``load_config(..., overrides=...)``: validating files as they would be, without writing them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx.config.load import ConfigError, load_config
from pbx.config.model import Extension, TenantId
from tests.config.conftest import INCOMING, SERVER, TENANT_HEAD, USERS, Writer, loads, tenant


def other_tenant() -> str:
    """A valid second tenant with its own domain and numbers (not default)."""
    return (
        tenant(incoming=INCOMING.replace("0312345678", "0311112222"))
        .replace("acme.example", "beta.example")
        .replace("default = true\n", "")
        .replace("0312345678", "0311112222")
        .replace("0612345678", "0611112222")
    )


def tenants_of(path: Path) -> Path:
    return path.parent / "tenants"


def test_an_override_replaces_the_file_and_nothing_is_written(write: Writer) -> None:
    path = write()
    acme = tenants_of(path) / "acme.toml"
    before = acme.read_bytes()
    new = tenant(users=USERS + '[[users]]\nextension = "1004"\npassword = "x"\n').encode()
    snapshot = load_config(path, overrides={acme: new})
    assert Extension("1004") in snapshot.tenants[TenantId("acme")].users
    assert acme.read_bytes() == before
    assert Extension("1004") not in loads(path).tenants[TenantId("acme")].users


def test_an_invalid_override_is_reported_under_the_files_name(write: Writer) -> None:
    path = write()
    acme = tenants_of(path) / "acme.toml"
    bad = tenant(users=USERS.replace('"1003"', '"9003"')).encode()
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides={acme: bad})
    assert [(p.file, p.entity, p.field) for p in info.value.problems] == [
        (str(acme), "user 9003", "extension"),
        (str(acme), "incoming rule #2 (number 0612345678)", "targets"),
    ]


def test_overrides_match_by_resolved_path(
    write: Writer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write()
    monkeypatch.chdir(tmp_path)
    roundabout = Path("config") / "tenants" / ".." / "tenants" / "acme.toml"
    new = tenant(users=USERS + '[[users]]\nextension = "1004"\npassword = "x"\n').encode()
    snapshot = load_config(path, overrides={roundabout: new})
    assert Extension("1004") in snapshot.tenants[TenantId("acme")].users


def test_none_takes_a_tenant_file_away(write: Writer) -> None:
    path = write(acme=tenant(), beta=other_tenant())
    snapshot = load_config(path, overrides={tenants_of(path) / "beta.toml": None})
    assert list(snapshot.tenants) == ["acme"]
    assert (tenants_of(path) / "beta.toml").exists()


def test_taking_the_last_tenant_away_leaves_the_empty_folder_warning(write: Writer) -> None:
    path = write()
    snapshot = load_config(path, overrides={tenants_of(path) / "acme.toml": None})
    assert snapshot.tenants == {}
    assert snapshot.warnings == (
        f"{path}: tenants_dir: no tenant files (*.toml) in {tenants_of(path)}",
    )


def test_a_new_toml_path_in_the_tenants_folder_is_a_new_tenant(write: Writer) -> None:
    path = write()
    beta = tenants_of(path) / "beta.toml"
    snapshot = load_config(path, overrides={beta: other_tenant().encode()})
    assert sorted(snapshot.tenants) == ["acme", "beta"]
    assert snapshot.tenants[TenantId("beta")].path == beta
    assert not beta.exists()


def test_a_new_tenant_is_checked_against_the_others(write: Writer) -> None:
    path = write()
    beta = tenants_of(path) / "beta.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides={beta: tenant(head=TENANT_HEAD).encode()})
    assert {(p.file, p.field) for p in info.value.problems} == {
        (str(beta), "number"),
        (str(beta), "domain"),
        (str(beta), "default"),
    }


def test_new_files_elsewhere_are_not_tenants(write: Writer) -> None:
    path = write()
    elsewhere = {
        path.parent / "beta.toml": b"not toml [",
        tenants_of(path) / "sub" / "beta.toml": b"not toml [",
        tenants_of(path) / "beta.toml.bak": b"not toml [",
    }
    assert list(load_config(path, overrides=elsewhere).tenants) == ["acme"]


def test_a_new_tenant_needs_the_tenants_folder(write: Writer) -> None:
    path = write(server='tenants_dir = "nowhere"\n' + SERVER)
    new = path.parent / "nowhere" / "acme.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides={new: tenant().encode()})
    assert [p.field for p in info.value.problems] == ["tenants_dir"]


def test_pbx_toml_itself_may_be_overridden_or_taken_away(write: Writer) -> None:
    path = write()
    changed = (SERVER + "[calls]\nmax_forward_hops = 3\n").encode()
    assert load_config(path, overrides={path: changed}).server.calls.max_forward_hops == 3
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides={path: None})
    assert [p.message for p in info.value.problems] == [
        "cannot read the file: No such file or directory"
    ]


def test_named_files_follow_the_overrides(write: Writer) -> None:
    text = SERVER + '[panel]\ntls_certificate = "panel.crt"\ntls_key = "panel.key"\n'
    path = write(server=text)
    certificate, key = path.parent / "panel.crt", path.parent / "panel.key"
    snapshot = load_config(path, overrides={certificate: b"c", key: b"k"})
    assert snapshot.server.panel.tls_certificate == certificate.resolve()
    certificate.write_bytes(b"c")
    key.write_bytes(b"k")
    assert loads(path).server.panel.tls_key == key.resolve()
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides={key: None})
    assert [(p.field, p.message) for p in info.value.problems] == [
        ("tls_key", f'"panel.key": there is no file at {key.resolve()}')
    ]


def test_the_digest_with_an_override_is_the_digest_after_writing_it(write: Writer) -> None:
    path = write()
    acme = tenants_of(path) / "acme.toml"
    new = (tenant() + "\n# edited in the panel\n").encode()
    validated = load_config(path, overrides={acme: new})
    acme.write_bytes(new)
    assert load_config(path).digest == validated.digest
    beta = tenants_of(path) / "beta.toml"
    created = load_config(path, overrides={beta: other_tenant().encode()})
    beta.write_bytes(other_tenant().encode())
    assert load_config(path).digest == created.digest


def test_without_overrides_the_version_is_still_passed(write: Writer) -> None:
    assert load_config(write(), version=3, overrides=None).version == 3
