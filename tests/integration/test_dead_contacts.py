"""Issue 15 part B through the running server: a TCP phone whose connection cannot be made.

The phones register over TCP with a Contact on a loopback port nobody listens on, then the
server restarts (their bindings are stored; their connections are gone, nothing marked them
unreachable: what a restart or a lost connection leaves behind). A call to such a phone must
fail its fork at the refused connect, not after Timer B (32 s), mark the contact unreachable,
and take the extension's offline forward, here to the trunk (SIPp as the carrier on loopback).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    SIPP_DIR,
    RunningServer,
    free_port,
    running_server,
    write_config,
)
from tests.integration.test_calls import (
    CARRIER_IP,
    EVERY_DAY,
    SERVER_EXTRA,
    Sipps,
    digest_authorization,
    header,
    read_sip,
    scenario_from_template,
    sipp_args,
    wait_for,
)

pytestmark = pytest.mark.integration

MOBILE = "09012345678"
TENANT = f"""
[tenant]
domain = "acme.example"
timezone = "Asia/Tokyo"
default = true
qualify_seconds = 0

[limits]
max_users = 10
recording_users = 2
international_calls = false

[[numbers]]
number = "0312345678"
[[numbers]]
number = "0312340002"

[[users]]
extension = "1005"
password = "secret1005"
forward = {{ offline = "{MOBILE}" }}

[[users]]
extension = "1006"
password = "secret1006"

[[incoming]]
number = "0312345678"
targets = "1005"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"

[[incoming]]
number = "0312340002"
targets = "1006"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"
"""


def register_tcp(server: RunningServer, ext: str, contact: str) -> None:
    """REGISTER ``ext`` over a TCP connection (digest), then close the connection."""
    with socket.create_connection(server.tcp, timeout=10) as conn:
        host, port = conn.getsockname()
        buffer = bytearray()
        authorization = ""
        for cseq in (1, 2):
            conn.sendall(
                (
                    "REGISTER sip:acme.example SIP/2.0\r\n"
                    f"Via: SIP/2.0/TCP {host}:{port};branch=z9hG4bK-{ext}-{cseq}\r\n"
                    "Max-Forwards: 70\r\n"
                    f"From: <sip:{ext}@acme.example>;tag=reg{ext}\r\n"
                    f"To: <sip:{ext}@acme.example>\r\n"
                    f"Call-ID: dead-{ext}@test\r\n"
                    f"CSeq: {cseq} REGISTER\r\n"
                    f"Contact: <{contact}>\r\n"
                    f"{authorization}Expires: 600\r\nContent-Length: 0\r\n\r\n"
                ).encode()
            )
            reply = read_sip(conn, buffer)
            if reply.startswith(b"SIP/2.0 401"):
                value = digest_authorization(
                    header(reply, "WWW-Authenticate"),
                    ext,
                    f"secret{ext}",
                    "REGISTER",
                    "sip:acme.example",
                )
                authorization = f"Authorization: {value}\r\n"
                continue
            assert reply.startswith(b"SIP/2.0 200"), reply
            return
    raise AssertionError("not registered")


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    root = tmp_path_factory.mktemp("dead")
    trunk_port = free_port(host=CARRIER_IP)
    config = write_config(
        root,
        tenants={"acme": TENANT},
        server_extra=SERVER_EXTRA,
        trunk=f"{CARRIER_IP}:{trunk_port}",
    )
    with running_server(config) as first:
        for ext in ("1005", "1006"):
            dead = free_port(socket.SOCK_STREAM)  # bound and closed again: nobody listens
            register_tcp(first, ext, f"sip:{ext}@127.0.0.1:{dead};transport=tcp")
    with running_server(config) as server:
        server.trunk_port = trunk_port  # type: ignore[attr-defined]
        yield server, root


def invite_from_carrier(server: RunningServer, number: str) -> tuple[int, float]:
    """A carrier INVITE (no SDP) from 127.0.0.2 over UDP: the final status and the seconds it
    took to come; the final response is acknowledged."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((CARRIER_IP, 0))
        sock.settimeout(40)
        host, port = sock.getsockname()
        call_id, via = f"{uuid.uuid4().hex}@test", f"SIP/2.0/UDP {host}:{port};branch=z9hG4bK-d1"
        common = (
            f"Via: {via}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:0901112222@{host}>;tag=carrier\r\n"
            f"To: <sip:{number}@acme.example>{{to_tag}}\r\n"
            f"Call-ID: {call_id}\r\n"
        )
        started = time.monotonic()
        sock.sendto(
            (
                f"INVITE sip:{number}@{server.udp[0]}:{server.udp[1]} SIP/2.0\r\n"
                + common.format(to_tag="")
                + f"CSeq: 1 INVITE\r\nContact: <sip:carrier@{host}:{port}>\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            server.udp,
        )
        while True:
            data, _ = sock.recvfrom(65535)
            status = int(data.split(b" ", 2)[1])
            if status >= 200:
                break
        took = time.monotonic() - started
        to_tag = ";tag=" + header(data, "To").split(";tag=")[1]
        sock.sendto(
            (
                f"ACK sip:{number}@{server.udp[0]}:{server.udp[1]} SIP/2.0\r\n"
                + common.format(to_tag=to_tag)
                + "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            server.udp,
        )
        return status, took


def record_of(root: Path, called: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        with contextlib.closing(sqlite3.connect(root / "data" / "pbx.sqlite3")) as db:
            db.row_factory = sqlite3.Row
            row = db.execute(
                "SELECT * FROM call_records WHERE called = ? AND ended_at IS NOT NULL", (called,)
            ).fetchone()
        return dict(row) if row is not None else None

    record: dict[str, Any] = wait_for(f"closed record of {called}", check)
    return record


def test_a_fork_to_a_tcp_phone_that_cannot_be_connected_fails_at_once(
    restarted: tuple[RunningServer, Path],
) -> None:
    server, root = restarted
    status, took = invite_from_carrier(server, "0312340002")  # 1006: no forward
    assert status == 480
    assert took < 1.0, f"the fork took {took:.2f}s to fail (Timer B is 32 s)"
    record = record_of(root, "0312340002")
    assert record["disposition"] == "failed"
    assert "1006 offline (503), no forward -> dropped (480)" in json.loads(record["trace"])
    code, bindings = server.admin_request("GET", "/registrations")
    assert code == 200
    (mine,) = [b for b in bindings if b["extension"] == "1006"]
    assert mine["reachable"] is False  # the registrar was told: the next call sees it offline


def test_a_tcp_phone_that_cannot_be_connected_takes_its_offline_forward_to_the_trunk(
    restarted: tuple[RunningServer, Path], tmp_path: Path
) -> None:
    server, root = restarted
    sipps = Sipps(tmp_path)
    try:
        trunk_port: int = server.trunk_port  # type: ignore[attr-defined]
        scenario = scenario_from_template("trunk_answer.xml", tmp_path, FROM_USER="0901112222")
        trunk_log = tmp_path / "trunk.log"
        args = sipp_args(
            scenario,
            server.udp,
            local_ip=CARRIER_IP,
            port=trunk_port,
            service="carrier",
            extra=["-trace_logs", "-log_file", str(trunk_log)],
        )
        sipps.start("trunk", args, bound=(CARRIER_IP, trunk_port))
        caller = sipp_args(
            SIPP_DIR / "carrier_call.xml",
            server.udp,
            local_ip=CARRIER_IP,
            port=free_port(host=CARRIER_IP),
            service="0312345678",
            extra=["-d", "300"],
        )
        sipps.start("carrier", caller)
        sipps.wait_all()
    finally:
        sipps.close()
    record = record_of(root, "0312345678")
    assert record["disposition"] == "answered"
    assert record["answered_by"] == MOBILE
    assert '"reason": "unavailable"' in record["forwarding"]
    assert f"1005 offline (503) -> forward offline to {MOBILE}" in json.loads(record["trace"])
    assert "dialled=" + MOBILE in trunk_log.read_text()
