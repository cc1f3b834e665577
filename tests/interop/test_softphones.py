"""Stock Debian softphones against the real server with the SHIPPED DEFAULT [auth] (issue 15).

- Two baresip 1.0 phones register, call each other through pbx and each hears the other's tone.
- A baresip phone killed without unregistering is offline to routing within the keep-alive
  interval plus one retry, and a call to it then takes its offline forward.
- A baresip phone registered over TCP whose process ends is offline at once.
- linphone 5.1 (linphonec) registers (MD5), calls a baresip phone and is called by another,
  each side hearing the other's tone; at a tenant offering SHA-256 first it answers SHA-256.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pbx.keepalive import probe_timeout
from tests.integration.harness import (
    DEFAULT_TENANT,
    REPO,
    RunningServer,
    free_port,
    running_server,
    write_config,
)
from tests.interop.phones import Baresip, Linphone

pytestmark = pytest.mark.integration

INTERVAL = 2  # qualify_seconds in the test tenant: short, to keep the test short
PASSWORDS = {ext: f"secret{ext}" for ext in ("1001", "1002", "1003", "1004")}
TONES = {"1001": 440, "1002": 1000, "1003": 700, "1004": 1300}
CANDIDATES = tuple(float(t) for t in TONES.values())


# A tenant that turns SHA-256 on for itself (design.md 9.2): linphone 5.1 answers SHA-256.
SHA_TENANT = """
[tenant]
domain = "sha.example"
timezone = "Asia/Tokyo"
qualify_seconds = 0
auth_algorithms = ["SHA-256", "MD5"]

[limits]
max_users = 2
recording_users = 0
international_calls = false

[[users]]
extension = "2001"
password = "secret2001"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("interop")
    tenant = DEFAULT_TENANT.replace("qualify_seconds = 0", f"qualify_seconds = {INTERVAL}")
    # No [auth] in pbx.toml: the shipped default is what these phones meet.
    # A fixed admin port: pbx simulate --live finds the server through pbx.toml.
    admin = free_port(socket.SOCK_STREAM)
    config = write_config(
        root / "pbx", tenants={"acme": tenant, "sha": SHA_TENANT}, admin_port=admin
    )
    assert "[auth]" not in config.read_text()
    with running_server(config) as running:
        yield running


def registrations(server: RunningServer) -> list[dict[str, Any]]:
    status, body = server.admin_request("GET", "/registrations")
    assert status == 200
    assert isinstance(body, list)
    return body


def wait_until(what: str, check: Any, timeout: float = 15.0, step: float = 0.1) -> float:
    """Poll ``check`` until true; the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)
    return time.monotonic() - started


def reachable(server: RunningServer, extension: str) -> bool:
    return any(r["extension"] == extension and r["reachable"] for r in registrations(server))


def registered(server: RunningServer, extension: str) -> bool:
    return any(r["extension"] == extension for r in registrations(server))


_next_port = [16000]


def phone(server: RunningServer, root: Path, extension: str, transport: str = "udp") -> Baresip:
    _next_port[0] += 10
    base = _next_port[0]
    return Baresip(
        root / f"baresip-{extension}-{base}",
        extension,
        PASSWORDS[extension],
        server.tcp if transport == "tcp" else server.udp,
        tone=TONES[extension],
        sip_port=base,
        rtp_base=base + 3000,
        transport=transport,
    )


def test_two_baresip_phones_register_call_and_hear_each_other(
    server: RunningServer, tmp_path: Path
) -> None:
    callee, caller = phone(server, tmp_path, "1002"), phone(server, tmp_path, "1004")
    try:
        callee.start()
        wait_until("1002 registered", lambda: registered(server, "1002"))
        caller.dial("1002")
        caller.wait_for("Call established")
        callee.wait_for("Call established")
        time.sleep(4)  # the tones flow for a few seconds (the condition under test)
        caller.stop()
        callee.stop()
        heard_by_caller, level = caller.heard(CANDIDATES)
        assert (heard_by_caller, level > 1000) == (TONES["1002"], True)
        heard_by_callee, level = callee.heard(CANDIDATES)
        assert (heard_by_callee, level > 1000) == (TONES["1004"], True)
        assert "401 Unauthorized" not in caller.output().split("Call established")[-1]
    finally:
        caller.stop()
        callee.stop()


def test_a_killed_phone_is_offline_within_interval_plus_retry_and_takes_its_offline_forward(
    server: RunningServer, tmp_path: Path
) -> None:
    # 1001 forwards to 1003 when offline (DEFAULT_TENANT).
    vanishing, forward, caller = (phone(server, tmp_path, e) for e in ("1001", "1003", "1002"))
    try:
        vanishing.start()
        forward.start()
        wait_until("1001 answered a keep-alive", lambda: _answered(server, "1001"))
        wait_until("1003 registered", lambda: registered(server, "1003"))
        vanishing.kill()
        took = wait_until("1001 unreachable", lambda: not reachable(server, "1001"), timeout=20)
        assert took <= INTERVAL + 2 * probe_timeout(INTERVAL) + 0.5
        assert registered(server, "1001")  # still bound: not expired, just not there
        # pbx simulate --live sees the same state routing does.
        report = simulate_live(server)
        assert report["lines"] == "live"
        assert "1001" in report["offline"]
        assert "1003" not in report["offline"]
        caller.dial("1001")
        caller.wait_for("Call established")
        forward.wait_for("Call established")  # the offline forward answered
        time.sleep(3)
        caller.stop()
        forward.stop()
        assert caller.heard(CANDIDATES)[0] == TONES["1003"]
    finally:
        for p in (vanishing, forward, caller):
            p.stop()


def test_a_tcp_phone_whose_connection_closes_is_offline_at_once(
    server: RunningServer, tmp_path: Path
) -> None:
    tcp = phone(server, tmp_path, "1003", transport="tcp")
    try:
        tcp.start()
        wait_until(
            "1003 over TCP",
            lambda: any(
                r["extension"] == "1003" and r["transport"] == "TCP" and r["reachable"]
                for r in registrations(server)
            ),
        )
        tcp.kill()  # the kernel closes its connection
        took = wait_until(
            "1003 unreachable",
            lambda: (
                not any(
                    r["extension"] == "1003" and r["transport"] == "TCP" and r["reachable"]
                    for r in registrations(server)
                )
            ),
            step=0.02,
        )
        assert took < 1.0
    finally:
        tcp.stop()


def simulate_live(server: RunningServer) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pbx",
            "simulate",
            "--config",
            str(server.config),
            "--number",
            "0312345678",
            "--at",
            datetime.now(UTC).isoformat(),
            "--live",
            "--json",
        ],
        capture_output=True,
        timeout=30,
        check=True,
        cwd=REPO,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _answered(server: RunningServer, extension: str) -> bool:
    return any(
        r["extension"] == extension and r["keepalive_answered"] for r in registrations(server)
    )


def test_linphone_registers_with_md5_and_calls_baresip_both_ways_each_hearing_the_other(
    server: RunningServer, tmp_path: Path
) -> None:
    """linphone 5.1 (linphonec) as 1004 calls baresip 1002, then baresip 1003 calls linphone."""
    linphone = Linphone(
        tmp_path / "linphone-1004",
        "1004",
        PASSWORDS["1004"],
        server.udp,
        tone=TONES["1004"],
        sip_port=free_port(),
        rtp_port=free_port(),
    )
    callee, caller = phone(server, tmp_path, "1002"), phone(server, tmp_path, "1003")
    try:
        linphone.start(auto_answer=True)
        callee.start()
        wait_until("1004 (linphonec)", lambda: _agent(server, "1004").startswith("Linphonec/5.1"))
        wait_until("1002 registered", lambda: registered(server, "1002"))
        # The shipped default [auth] challenges with MD5 only, and linphone answers it.
        challenges, answers = linphone.digest_lines()
        assert challenges
        assert answers
        assert all("algorithm=MD5" in line for line in challenges + answers)

        linphone.dial("1002")
        linphone.wait_for("connected.")
        callee.wait_for("Call established")
        time.sleep(4)  # the tones flow for a few seconds (the condition under test)
        linphone.hang_up()
        linphone.wait_for("ended")
        callee.stop()
        heard_by_linphone, level = linphone.heard(CANDIDATES)
        assert (heard_by_linphone, level > 1000) == (TONES["1002"], True)
        heard_by_callee, level = callee.heard(CANDIDATES)
        assert (heard_by_callee, level > 1000) == (TONES["1004"], True)

        linphone.record()  # the next call to a file of its own
        caller.dial("1004")
        caller.wait_for("Call established")
        linphone.wait_for("connected.", count=2)
        time.sleep(4)
        caller.stop()
        linphone.stop()
        heard_by_caller, level = caller.heard(CANDIDATES)
        assert (heard_by_caller, level > 1000) == (TONES["1004"], True)
        heard_by_linphone, level = linphone.heard(CANDIDATES)
        assert (heard_by_linphone, level > 1000) == (TONES["1003"], True)
    finally:
        linphone.stop()
        callee.stop()
        caller.stop()


def _agent(server: RunningServer, extension: str) -> str:
    return next(
        (str(r["user_agent"]) for r in registrations(server) if r["extension"] == extension), ""
    )


def test_linphone_answers_sha256_where_a_tenant_offers_it_first(
    server: RunningServer, tmp_path: Path
) -> None:
    linphone = Linphone(
        tmp_path / "linphone-2001",
        "2001",
        "secret2001",
        server.udp,
        tone=TONES["1004"],
        sip_port=free_port(),
        rtp_port=free_port(),
        domain="sha.example",
    )
    try:
        linphone.start()
        wait_until(
            "2001@sha.example",
            lambda: any(
                r["tenant"] == "sha" and r["extension"] == "2001" for r in registrations(server)
            ),
        )
        challenges, answers = linphone.digest_lines()
        # One 401 with two challenges, SHA-256 first (the tenant's order).
        assert ["algorithm=SHA-256" in c for c in challenges[:2]] == [True, False]
        assert "algorithm=MD5" in challenges[1]
        assert answers
        assert all("algorithm=SHA-256" in line for line in answers)
    finally:
        linphone.stop()
