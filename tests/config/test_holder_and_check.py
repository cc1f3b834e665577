"""Reload through ConfigHolder, the check-config command, and the shipped demo configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pbx.config import check
from pbx.config.holder import ConfigHolder
from pbx.config.load import ConfigError, load_config
from pbx.config.model import Extension, PhoneNumber, TenantId
from pbx.numbers import AFTER_HOURS_TARGET
from tests.config.conftest import USERS, Writer, tenant

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "config" / "pbx.toml"


# --- ConfigHolder ------------------------------------------------------------------------------


def test_reload_increments_version_and_swaps_snapshot(write: Writer) -> None:
    path = write()
    holder = ConfigHolder.load(path)
    first = holder.current
    assert first.version == 1
    tenant_file = path.parent / "tenants" / "acme.toml"
    tenant_file.write_text(
        tenant(users=USERS + '[[users]]\nextension = "1004"\npassword = "x"\n'), encoding="utf-8"
    )
    second = holder.reload(path)
    assert holder.current is second
    assert second.version == 2
    assert Extension("1004") in second.tenants[TenantId("acme")].users
    assert Extension("1004") not in first.tenants[TenantId("acme")].users  # old snapshot untouched
    assert second.digest != first.digest
    # Defaults to the current pbx.toml; the same files are not a new version (issue 19).
    assert holder.reload() is second
    assert holder.current.version == 2
    (path.parent / "tenants" / "acme.toml").write_text(tenant(), encoding="utf-8")
    assert holder.reload().version == 3


def test_failed_reload_keeps_the_old_snapshot(write: Writer) -> None:
    path = write()
    holder = ConfigHolder(load_config(path, version=4))
    before = holder.current
    (path.parent / "tenants" / "acme.toml").write_text(
        tenant(users=USERS.replace('extension = "1003"', 'extension = "9003"')), encoding="utf-8"
    )
    with pytest.raises(ConfigError) as info:
        holder.reload(path)
    assert holder.current is before
    assert holder.current.version == 4
    assert info.value.problems[0].entity == "user 9003"
    # Fixed back to the files in force: that version stays (issue 19); new files load as the
    # next version after it.
    (path.parent / "tenants" / "acme.toml").write_text(tenant(), encoding="utf-8")
    assert holder.reload(path) is before
    (path.parent / "tenants" / "acme.toml").write_text(tenant() + "\n", encoding="utf-8")
    assert holder.reload(path).version == 5


# --- check-config ------------------------------------------------------------------------------


def run_check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = check.main(argparse.Namespace(config=path))
    return code, capsys.readouterr().out.splitlines()


def test_check_config_ok(write: Writer, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_check(write(), capsys)
    assert code == 0
    assert lines == ["OK: configuration valid (1 tenants, 3 users)"]


def test_check_config_prints_warnings_and_still_passes(
    write: Writer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(acme=tenant(users=USERS.replace('"1002"', '"１００２"')))
    code, lines = run_check(path, capsys)
    assert code == 0
    assert lines[0].startswith(
        f"warning: {path.parent / 'tenants' / 'acme.toml'}: user 1002: extension:"
    )
    assert lines[-1] == "OK: configuration valid (1 tenants, 3 users)"


def test_check_config_lists_every_problem_and_fails(
    write: Writer, capsys: pytest.CaptureFixture[str]
) -> None:
    users = USERS.replace('"1003"', '"9003"').replace(
        'password = "pw2"', 'password = "pw2"\nforward = { busy = "1099" }'
    )
    path = write(acme=tenant(users=users))
    code, lines = run_check(path, capsys)
    assert code == 1
    file = path.parent / "tenants" / "acme.toml"
    assert lines == [
        f'{file}: user 9003: extension: "9003" must be exactly 4 half-width digits, 0000-8999',
        f'{file}: user 1002: forward.busy: "1099" is not an extension of tenant acme nor a valid '
        "external number",
        f"{file}: incoming rule #2 (number 0612345678): targets: unknown extension 1003: not an "
        "extension of tenant acme",
        "FAILED: 3 problems in the configuration",
    ]


def test_check_config_prints_warnings_after_problems(
    write: Writer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        acme=tenant(users=USERS.replace('"1002"', '"１００２"').replace('"1003"', '"9003"'))
    )
    code, lines = run_check(path, capsys)
    assert code == 1
    assert lines[0].endswith(
        'user 9003: extension: "9003" must be exactly 4 half-width digits, 0000-8999'
    )
    assert lines[-2].startswith("warning: ")
    assert "user 1002: extension: full-width characters normalised" in lines[-2]
    assert lines[-1].startswith("FAILED: ")


def test_check_config_via_the_cli(write: Writer, capsys: pytest.CaptureFixture[str]) -> None:
    from pbx.cli import main

    assert main(["check-config", "--config", str(write())]) == 0
    assert "OK: configuration valid" in capsys.readouterr().out


# --- the shipped demo configuration ------------------------------------------------------------


def test_demo_configuration_passes_check_config(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_check(DEMO, capsys)
    assert code == 0, lines
    assert lines[-1] == "OK: configuration valid (1 tenants, 4 users)"


def test_demo_configuration_matches_the_manual_and_design() -> None:
    snapshot = load_config(DEMO)
    server = snapshot.server
    assert [(s.transport, s.host, s.port) for s in server.sip.listen] == [
        ("udp", "127.0.0.1", 5060),
        ("tcp", "127.0.0.1", 5060),
    ]
    assert (server.admin.host, server.admin.port) == ("127.0.0.1", 8088)
    assert server.storage.data_dir == (REPO / "data").resolve()
    assert [(t.name, t.host, t.port) for t in server.trunks] == [("carrier", "127.0.0.2", 5080)]
    assert (server.media.rtp_port_min, server.media.rtp_port_max) == (20000, 29999)

    acme = snapshot.tenants[TenantId("acme")]
    assert snapshot.default_tenant == "acme"
    assert acme.domain == "acme.example"
    assert acme.numbers == ("0312345678", "0612345678")
    assert sorted(acme.users) == ["1001", "1002", "1003", "1004"]
    first = acme.users[Extension("1001")]
    assert first.recording
    assert (first.forward.busy, first.forward.no_answer, first.forward.offline) == (
        "1002",
        "09012345678",
        "1003",
    )
    schedule = [
        (r.targets, r.start.isoformat(), r.end.isoformat(), len(r.days))
        for r in acme.rules_for(PhoneNumber("0312345678"))
    ]
    assert schedule == [
        (("1001", "1002"), "08:00:00", "19:59:59", 7),
        (("1003",), "20:00:00", "23:59:59", 7),
        ((AFTER_HOURS_TARGET,), "00:00:00", "07:59:59", 7),
    ]
    assert acme.rules_for(PhoneNumber("0612345678"))
