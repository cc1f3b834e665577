"""The running server over real loopback sockets: OPTIONS (SIPp), RFC 4475, TCP framing."""

from __future__ import annotations

import csv
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import RunningServer, run_sipp, running_server, write_config

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "sip" / "data" / "rfc4475"
EXPECT = {
    row["name"]: row
    for row in csv.DictReader((DATA / "EXPECT.tsv").open(encoding="utf-8"), delimiter="\t")
}
# Torture messages arrive quickly from one address: lift the per-source rate limit for them.
SERVER_EXTRA = """
[security]
max_requests_per_second = 10000
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = write_config(
        tmp_path_factory.mktemp("pbx"),
        server_extra=SERVER_EXTRA,
        # An incomplete TCP message is given 2 s (default 32) so clerr's test stays short.
        sip_extra="tcp_message_seconds = 2",
    )
    with running_server(config) as running:
        yield running


def options_request(target: tuple[str, int], local: tuple[str, int], call_id: str) -> bytes:
    return (
        f"OPTIONS sip:{target[0]}:{target[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{local[0]}>;tag=probe\r\n"
        f"To: <sip:{target[0]}:{target[1]}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def status_of(datagram: bytes) -> int | None:
    first = datagram.split(b"\r\n", 1)[0]
    parts = first.split(b" ")
    if parts[0] != b"SIP/2.0" or len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1])


def exchange(server: RunningServer, payload: bytes) -> tuple[list[bytes], bytes]:
    """Send ``payload`` then an OPTIONS from a fresh socket; return (replies before the
    OPTIONS' 200, that 200). The OPTIONS answer is the synchronisation point: the server
    handles one socket's datagrams in order, so anything for ``payload`` comes first."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5.0)
        sock.sendto(payload, server.udp)
        probe_id = f"probe-{uuid.uuid4().hex}"
        sock.sendto(options_request(server.udp, sock.getsockname(), probe_id), server.udp)
        before: list[bytes] = []
        while True:
            data, _ = sock.recvfrom(65536)
            if probe_id.encode() in data:
                return before, data
            before.append(data)


def allowed(outcome: int | None, acceptable: str) -> bool:
    for token in acceptable.split("|"):
        if token == "ANY":
            return True
        if token == "DROP" and outcome is None:
            return True
        if token == "NON400" and outcome is not None and outcome != 400:
            return True
        if token.isdigit() and outcome == int(token):
            return True
    return False


def test_options_over_udp_with_sipp(server: RunningServer, tmp_path: Path) -> None:
    result = run_sipp("options.xml", server.udp, transport="u1", workdir=tmp_path, timeout=20)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_options_over_tcp_with_sipp(server: RunningServer, tmp_path: Path) -> None:
    result = run_sipp("options.xml", server.tcp, transport="t1", workdir=tmp_path, timeout=20)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_rfc4475_message_as_one_datagram(server: RunningServer, name: str) -> None:
    payload = (DATA / f"{name}.dat").read_bytes()
    before, probe_answer = exchange(server, payload)
    finals = [s for s in map(status_of, before) if s is not None and s >= 200]
    outcome = finals[0] if finals else None
    acceptable = EXPECT[name]["acceptable_udp_outcomes"]
    assert allowed(outcome, acceptable), f"{name}: got {outcome}, EXPECT allows {acceptable}"
    assert len(finals) <= 1, f"{name}: more than one final response: {finals}"
    assert status_of(probe_answer) == 200, "the server must answer OPTIONS right after"


def test_response_goes_to_source_with_received_and_rport(server: RunningServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5.0)
        port = sock.getsockname()[1]
        request = options_request(server.udp, ("192.0.2.7", 5060), "rport-check").replace(
            b";branch=", b";rport;branch="
        )
        sock.sendto(request, server.udp)
        data, _ = sock.recvfrom(65536)
    via = next(line for line in data.split(b"\r\n") if line.lower().startswith(b"via:"))
    assert f"rport={port}".encode() in via
    assert b"received=127.0.0.1" in via


def tcp_exchange(server: RunningServer, payload: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``payload`` over a new TCP connection; everything read until the server closes."""
    with socket.create_connection(server.tcp, timeout=timeout) as sock:
        sock.sendall(payload)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                pytest.fail(f"the server kept the connection open; read so far: {chunks}")
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


@pytest.mark.parametrize("name", ["ncl", "mcl01"])
def test_tcp_framing_error_closes_the_connection(server: RunningServer, name: str) -> None:
    tcp_exchange(server, (DATA / f"{name}.dat").read_bytes())


def test_tcp_incomplete_message_times_out(server: RunningServer) -> None:
    # clerr declares Content-Length 9999 with a 154-byte body: the server waits for the rest,
    # then closes the connection at tcp_message_seconds, never buffering without bound.
    started = time.monotonic()
    tcp_exchange(server, (DATA / "clerr.dat").read_bytes(), timeout=10.0)
    assert 1.5 <= time.monotonic() - started < 10.0


def test_tcp_message_over_64k_closes_the_connection(server: RunningServer) -> None:
    head = options_request(server.tcp, ("127.0.0.1", 5060), "big").replace(
        b"Content-Length: 0\r\n", b"X-Padding: " + b"a" * 70000 + b"\r\nContent-Length: 0\r\n"
    )
    tcp_exchange(server, head)


def test_tcp_keepalive_ping_is_answered_and_messages_follow(server: RunningServer) -> None:
    with socket.create_connection(server.tcp, timeout=5) as sock:
        sock.sendall(b"\r\n\r\n")
        assert sock.recv(16) == b"\r\n"
        local = sock.getsockname()
        sock.sendall(options_request(server.tcp, local, "after-ping").replace(b"UDP", b"TCP"))
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        assert status_of(data) == 200


def test_ipv6_listeners_answer_over_udp_and_tcp(tmp_path: Path) -> None:
    config = write_config(tmp_path, listen='["udp:[::1]:0", "tcp:[::1]:0"]')
    with running_server(config) as v6:
        assert v6.udp[0] == "::1"
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
            sock.settimeout(5.0)
            # The Via claims another address, so the server must add received (RFC 5118 form).
            claimed = ("[2001:db8::5]", 5060)
            sock.sendto(options_request(("[::1]", v6.udp[1]), claimed, "v6-udp"), v6.udp)
            data, source = sock.recvfrom(65536)
        assert status_of(data) == 200
        assert source[:2] == v6.udp
        assert b"received=::1" in data
        with socket.create_connection(v6.tcp, timeout=5) as conn:
            local = conn.getsockname()
            request = options_request(("[::1]", v6.tcp[1]), (f"[{local[0]}]", local[1]), "v6-tcp")
            conn.sendall(request.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += conn.recv(65536)
        assert status_of(reply) == 200


def test_metrics_count_messages_by_method_and_status(server: RunningServer) -> None:
    def scrape() -> dict[str, float]:
        code, text = server.admin_request("GET", "/metrics")
        assert code == 200
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    before = scrape()
    exchange(server, options_request(server.udp, ("127.0.0.1", 5060), "metrics-1"))
    after = scrape()
    key_in = 'pbx_sip_messages_in_total{method="OPTIONS"}'
    key_out = 'pbx_sip_messages_out_total{status="200"}'
    assert after[key_in] - before.get(key_in, 0) == 2  # the payload and the probe
    assert after[key_out] - before.get(key_out, 0) == 2
    for name in (
        "pbx_config_version",
        "pbx_registrations",
        "pbx_transactions",
        "pbx_event_loop_lag_seconds",
        "pbx_sip_retransmissions_sent_total",
        "pbx_auth_failures_total",
    ):
        assert any(key.split("{")[0] == name for key in after) or name in after, name


def test_udp_keepalive_datagrams_are_ignored_quietly(server: RunningServer) -> None:
    def dropped(reason: str) -> float:
        _, text = server.admin_request("GET", "/metrics")
        key = f'pbx_sip_messages_dropped_total{{reason="{reason}"}} '
        return sum(float(line[len(key) :]) for line in text.splitlines() if line.startswith(key))

    malformed, keepalives = dropped("malformed"), dropped("keepalive")
    for payload in (b"\r\n\r\n", b"\r\n", b"\x00\x00\x00\x00"):
        before, probe_answer = exchange(server, payload)
        assert before == []
        assert status_of(probe_answer) == 200
    assert dropped("keepalive") == keepalives + 3
    assert dropped("malformed") == malformed
