"""Hot reload of a running server: POST /reload (through `pbx reload`) and SIGHUP."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.integration.harness import (
    DEFAULT_TENANT,
    REPO,
    RunningServer,
    free_port,
    running_server,
    write_config,
)
from tests.integration.sip_client import SipUdpClient

pytestmark = pytest.mark.integration

USER_1005 = """
[[users]]
extension = "1005"
password = "secret1005"
caller_id = "0312345678"
"""


def pbx_cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbx", *args, "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def tenant_file(config: Path) -> Path:
    return config.parent / "tenants" / "acme.toml"


T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """Poll a real condition (admin API state) until true; bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def status(server: RunningServer) -> dict:  # type: ignore[type-arg]
    code, body = server.admin_request("GET", "/status")
    assert code == 200
    return body  # type: ignore[no-any-return]


def test_reload_swaps_config_and_refuses_a_broken_one(tmp_path: Path) -> None:
    # `pbx reload` finds the server through [admin] listen: give it a real port.
    config = write_config(tmp_path, admin_port=free_port(socket.SOCK_STREAM))
    with running_server(config) as server:
        assert status(server)["config_version"] == 1
        # 1004 registers under version 1.
        with SipUdpClient(server.udp, "1004", "secret1004", "acme.example") as phone:
            assert phone.register().status == 200
        code, regs = server.admin_request("GET", "/registrations")
        assert [r["extension"] for r in regs] == ["1004"]

        # Version 2: 1005 added, 1004 removed.
        text = DEFAULT_TENANT.replace(
            '[[users]]\nextension = "1004"\npassword = "secret1004"\ncaller_id = "0612345678"\n',
            "",
        )
        assert text != DEFAULT_TENANT
        tenant_file(config).write_text(text + USER_1005, encoding="utf-8")
        result = pbx_cli("reload", config=config)
        assert result.returncode == 0, result.stderr
        assert "version 2" in result.stdout
        now = status(server)
        assert now["config_version"] == 2
        users = now["tenants"][0]["users"]
        assert "1005" in users
        assert "1004" not in users
        # The removed user's registration is gone at once; the new user registers at once; the
        # removed one no longer can (the same credentials are refused).
        code, regs = server.admin_request("GET", "/registrations")
        assert (code, regs) == (200, [])
        with SipUdpClient(server.udp, "1005", "secret1005", "acme.example") as phone:
            assert phone.register().status == 200
        with SipUdpClient(server.udp, "1004", "secret1004", "acme.example") as phone:
            assert phone.register().status == 401

        # A broken config changes nothing; the errors come back from `pbx reload`.
        tenant_file(config).write_text(
            text + USER_1005 + '\n[[users]]\nextension = "12345"\npassword = "x"\n',
            encoding="utf-8",
        )
        result = pbx_cli("reload", config=config)
        assert result.returncode == 1
        assert "12345" in result.stderr
        assert "extension" in result.stderr
        assert "acme.toml" in result.stderr
        assert "version 2 stays in force" in result.stderr
        assert status(server)["config_version"] == 2
        with SipUdpClient(server.udp, "1005", "secret1005", "acme.example") as phone:
            assert phone.register().status == 200


def test_changed_password_stops_the_old_one(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with running_server(config) as server:
        tenant_file(config).write_text(
            DEFAULT_TENANT.replace('password = "secret1002"', 'password = "newpass1002"'),
            encoding="utf-8",
        )
        code, body = server.admin_request("POST", "/reload")
        assert code == 200
        assert body["version"] == 2
        with SipUdpClient(server.udp, "1002", "secret1002", "acme.example") as phone:
            assert phone.register().status == 401
        with SipUdpClient(server.udp, "1002", "newpass1002", "acme.example") as phone:
            assert phone.register().status == 200


def test_sighup_reloads(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with running_server(config) as server:
        tenant_file(config).write_text(DEFAULT_TENANT + USER_1005, encoding="utf-8")
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: server.events("config_reloaded"), "the config_reloaded log event")
        assert status(server)["config_version"] == 2
        assert "1005" in status(server)["tenants"][0]["users"]
