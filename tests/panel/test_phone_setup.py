"""端末設定 values (pbx.panel.phone_setup): where the server address comes from."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pbx.config.load import load_config
from pbx.config.model import ConfigSnapshot, Extension, ListenSpec, TenantId
from pbx.panel.phone_setup import PhoneSetup, phone_setup, server_host
from tests.panel.conftest import ACME, BETA, SERVER


def snapshot(tmp_path: Path, sip: str = "") -> ConfigSnapshot:
    (tmp_path / "tenants").mkdir(exist_ok=True)
    server = SERVER.replace(
        'listen = ["udp:127.0.0.1:5060"]', sip or 'listen = ["udp:127.0.0.1:5060"]'
    )
    (tmp_path / "pbx.toml").write_text(server, encoding="utf-8")
    (tmp_path / "tenants" / "acme.toml").write_text(ACME, encoding="utf-8")
    (tmp_path / "tenants" / "beta.toml").write_text(BETA, encoding="utf-8")
    return load_config(tmp_path / "pbx.toml")


def setup_of(
    snap: ConfigSnapshot, tenant: str, ext: str, host: str = "pbx.example.jp"
) -> PhoneSetup:
    t = snap.tenants[TenantId(tenant)]
    return phone_setup(snap, t, t.users[Extension(ext)], host)


def test_a_specific_listen_address_is_the_server_address(tmp_path: Path) -> None:
    setup = setup_of(snapshot(tmp_path), "acme", "1001")
    assert setup.primary is not None
    assert (setup.primary.host, setup.primary.port, setup.primary.transport) == (
        "127.0.0.1",
        5060,
        "UDP",
    )
    assert setup.primary.source == "listen"
    assert (setup.domain, setup.username, setup.auth_id) == ("acme.example", "1001", "1001")
    assert setup.default_tenant is True
    assert setup.password_stored is True  # the fixture's file holds a clear-text password
    assert setup.baresip_account() == (
        '<sip:1001@acme.example>;auth_user=1001;outbound="sip:127.0.0.1:5060;transport=udp"'
    )
    assert setup_of(snapshot(tmp_path), "beta", "2001").default_tenant is False


def test_a_wildcard_listen_uses_advertise_else_the_panels_host(tmp_path: Path) -> None:
    both = 'listen = ["tcp:0.0.0.0:5080", "udp:0.0.0.0:5070"]'
    snap = snapshot(tmp_path, both)
    setup = setup_of(snap, "acme", "1001", host="192.0.2.50")
    # UDP first (what phones default to), then TCP.
    assert [(e.transport, e.hostport, e.source) for e in setup.endpoints] == [
        ("UDP", "192.0.2.50:5070", "panel"),
        ("TCP", "192.0.2.50:5080", "panel"),
    ]
    advertised = replace(snap.server.sip, advertise="203.0.113.9")
    assert server_host(advertised, "0.0.0.0", "192.0.2.50") == ("203.0.113.9", "advertise")
    assert server_host(advertised, "::", "[2001:db8::1]") == ("203.0.113.9", "advertise")
    assert server_host(snap.server.sip, "::", "[2001:db8::1]") == ("2001:db8::1", "panel")
    assert server_host(advertised, "192.0.2.1", "x") == ("192.0.2.1", "listen")


def test_an_ipv6_server_is_bracketed_in_uris(tmp_path: Path) -> None:
    snap = snapshot(tmp_path)
    sip = replace(snap.server.sip, listen=(ListenSpec("udp", "2001:db8::5", 5060),))
    snap = replace(snap, server=replace(snap.server, sip=sip))
    setup = setup_of(snap, "acme", "1001")
    assert setup.primary is not None
    assert setup.primary.host == "2001:db8::5"
    assert setup.primary.hostport == "[2001:db8::5]:5060"
    assert 'outbound="sip:[2001:db8::5]:5060;transport=udp"' in setup.baresip_account()


def test_the_addresses_the_server_bound_win_over_the_configured_ones(tmp_path: Path) -> None:
    snap = snapshot(tmp_path, 'listen = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]')
    t = snap.tenants[TenantId("acme")]
    bound = [ListenSpec("tcp", "127.0.0.1", 41001), ListenSpec("udp", "127.0.0.1", 41000)]
    setup = phone_setup(snap, t, t.users[Extension("1001")], "panel.test", bound)
    assert [(e.transport, e.port) for e in setup.endpoints] == [("UDP", 41000), ("TCP", 41001)]
