"""``[panel]`` in pbx.toml: the web control panel's listener, TLS files, sessions and history."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx.config.model import PanelSettings
from tests.config.conftest import SERVER, Writer, loads, only_problem, problems_of


def panel(text: str) -> str:
    return SERVER + "[panel]\n" + text


def pem_files(path: Path) -> None:
    """A certificate and a key beside pbx.toml (their contents are not checked)."""
    (path.parent / "tls").mkdir(exist_ok=True)
    (path.parent / "tls" / "panel.crt").write_text("cert\n", encoding="utf-8")
    (path.parent / "tls" / "panel.key").write_text("key\n", encoding="utf-8")


def test_panel_defaults(write: Writer) -> None:
    settings = loads(write()).server.panel
    assert settings == PanelSettings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8089)
    assert (settings.tls_certificate, settings.tls_key) == (None, None)
    assert (settings.session_idle_minutes, settings.session_max_hours) == (30, 12)
    assert settings.history_versions == 50


def test_panel_settings_are_parsed(write: Writer) -> None:
    path = write(
        server=panel(
            'listen = "[::1]:9443"\ntls_certificate = "tls/panel.crt"\n'
            'tls_key = "tls/panel.key"\nsession_idle_minutes = 15\nsession_max_hours = 8\n'
            "history_versions = 10\n"
        )
    )
    pem_files(path)
    snapshot = loads(path)
    settings = snapshot.server.panel
    assert (settings.host, settings.port) == ("::1", 9443)
    assert settings.tls_certificate == (path.parent / "tls" / "panel.crt").resolve()
    assert settings.tls_key == (path.parent / "tls" / "panel.key").resolve()
    assert (settings.session_idle_minutes, settings.session_max_hours) == (15, 8)
    assert settings.history_versions == 10
    assert snapshot.warnings == ()


def test_tls_paths_are_resolved_against_the_folder_of_pbx_toml(write: Writer) -> None:
    path = write(server=panel('tls_certificate = "../certs/c.pem"\ntls_key = "../certs/k.pem"\n'))
    certs = path.parent.parent / "certs"
    certs.mkdir()
    (certs / "c.pem").write_text("c\n", encoding="utf-8")
    (certs / "k.pem").write_text("k\n", encoding="utf-8")
    settings = loads(path).server.panel
    assert settings.tls_certificate == (certs / "c.pem").resolve()
    assert settings.tls_key == (certs / "k.pem").resolve()
    assert settings.tls_certificate.is_absolute()


def test_history_versions_may_be_zero(write: Writer) -> None:
    assert loads(write(server=panel("history_versions = 0\n"))).server.panel.history_versions == 0


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ('listen = "localhost:8089"', "listen", "not an IP address"),
        ('listen = "127.0.0.1"', "listen", "port is required"),
        ('listen = "::1:8089"', "listen", "brackets"),
        ('listen = "127.0.0.1:70000"', "listen", "not a port"),
        ("listen = 8089", "listen", "must be a string"),
        ('listen = "127.0.0.1:8088"', "listen", "also the address of [admin] listen"),
        (
            'listen = "0.0.0.0:8088"\ntls_certificate = "tls/panel.crt"\ntls_key = "tls/panel.key"',
            "listen",
            "also the address of [admin] listen",
        ),
        ('tls_certificate = "tls/panel.crt"', "tls_key", "both or neither"),
        ('tls_key = "tls/panel.key"', "tls_certificate", "both or neither"),
        (
            'tls_certificate = "tls/none.crt"\ntls_key = "tls/panel.key"',
            "tls_certificate",
            "there is no file at",
        ),
        ('tls_certificate = "tls/panel.crt"\ntls_key = "tls"', "tls_key", "there is no file at"),
        ('tls_certificate = ""\ntls_key = "tls/panel.key"', "tls_certificate", "must not be empty"),
        ('tls_key = true\ntls_certificate = "tls/panel.crt"', "tls_key", "must be a string"),
        ("session_idle_minutes = 0", "session_idle_minutes", "at least 1"),
        ('session_idle_minutes = "30"', "session_idle_minutes", "must be an integer"),
        ("session_max_hours = 0", "session_max_hours", "at least 1"),
        ("history_versions = -1", "history_versions", "at least 0"),
        ("history_version = 5", "history_version", 'did you mean "history_versions"'),
    ],
)
def test_panel_problems_name_section_and_key(
    write: Writer, text: str, field: str, fragment: str
) -> None:
    path = write(server=panel(text + "\n"))
    pem_files(path)
    problem = only_problem(path)
    assert (problem.file, problem.entity, problem.field) == (str(path), "[panel]", field)
    assert fragment in problem.message


def test_missing_certificate_names_the_resolved_path(write: Writer) -> None:
    path = write(server=panel('tls_certificate = "nope.crt"\ntls_key = "nope.key"\n'))
    found = [p.message for p in problems_of(path)]
    assert found == [
        f'"nope.crt": there is no file at {(path.parent / "nope.crt").resolve()}',
        f'"nope.key": there is no file at {(path.parent / "nope.key").resolve()}',
    ]


def test_panel_on_a_public_address_without_tls_is_a_warning(write: Writer) -> None:
    snapshot = loads(write(server=panel('listen = "0.0.0.0:8089"\n')))
    assert snapshot.server.panel.host == "0.0.0.0"
    assert len(snapshot.warnings) == 1
    assert "[panel]: listen" in snapshot.warnings[0]
    assert "clear text" in snapshot.warnings[0]


def test_panel_on_a_public_address_with_tls_is_quiet(write: Writer) -> None:
    path = write(
        server=panel(
            'listen = "0.0.0.0:8443"\ntls_certificate = "tls/panel.crt"\n'
            'tls_key = "tls/panel.key"\n'
        )
    )
    pem_files(path)
    assert loads(path).warnings == ()


def test_panel_and_admin_may_both_take_any_free_port(write: Writer) -> None:
    text = SERVER + '[admin]\nlisten = "127.0.0.1:0"\n[panel]\nlisten = "127.0.0.1:0"\n'
    assert loads(write(server=text)).server.panel.port == 0


def test_panel_and_admin_on_one_port_of_different_addresses(write: Writer) -> None:
    text = SERVER + '[admin]\nlisten = "127.0.0.1:8088"\n[panel]\nlisten = "127.0.0.2:8088"\n'
    assert loads(write(server=text)).server.panel.port == 8088


def test_idle_limit_not_below_the_session_limit_is_a_warning(write: Writer) -> None:
    snapshot = loads(write(server=panel("session_idle_minutes = 60\nsession_max_hours = 1\n")))
    assert snapshot.warnings == (
        f"{snapshot.server.path}: [panel]: session_idle_minutes: 60 minutes is not less than "
        "session_max_hours (60 minutes): sessions never end for being idle",
    )
