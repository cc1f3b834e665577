"""Issue 17 item 8: malformed SDP offers sent in INVITEs to a running ``pbx run`` over loopback.

Every case of tests/media/sdp_cases.py goes in an INVITE from the carrier's address (trusted by
address, so the offer reaches the call engine without a challenge) to a number that rings two
extensions that are not registered. Each gets its final answer (400, 488, or for an accepted
offer the call's own failure, 480), is ACKed, and the RTP port pool
(``pbx_rtp_ports_in_use``) is back to its baseline before the next case is sent.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.harness import RunningServer, running_server, write_config
from tests.integration.sip_client import Reply, parse_reply
from tests.media.sdp_cases import ACCEPTED, all_cases, offer

pytestmark = pytest.mark.integration

CARRIER = "127.0.0.2"  # write_config's default trunk address
PORTS = "pbx_rtp_ports_in_use"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = write_config(tmp_path_factory.mktemp("sdp"))
    with running_server(config) as running:
        yield running


def invite(port: int, body: bytes, *, transport: str = "UDP") -> tuple[bytes, str, str]:
    branch = f"z9hG4bK{uuid.uuid4().hex}"
    call_id = f"{uuid.uuid4().hex}@{CARRIER}"
    head = (
        "INVITE sip:0312345678@acme.example SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {CARRIER}:{port};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:0901112222@{CARRIER}>;tag=c{branch[-8:]}\r\n"
        "To: <sip:0312345678@acme.example>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:0901112222@{CARRIER}:{port}>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body, branch, call_id


def ack(port: int, branch: str, call_id: str, reply: Reply) -> bytes:
    """The ACK of a non-2xx final answer (RFC 3261 17.1.1.3): same branch, the answer's To."""
    return (
        "ACK sip:0312345678@acme.example SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {CARRIER}:{port};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:0901112222@{CARRIER}>;tag=c{branch[-8:]}\r\n"
        f"To: {reply.header('To')}\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def final_answer(sock: socket.socket) -> Reply:
    while True:
        reply = parse_reply(sock.recv(65536))
        if reply.status >= 200:
            return reply


def ports_back_to(server: RunningServer, baseline: float, timeout: float = 5.0) -> float:
    deadline = time.monotonic() + timeout
    while (in_use := server.metrics()[PORTS]) != baseline and time.monotonic() < deadline:
        time.sleep(0.02)
    return in_use


def test_each_malformed_offer_is_answered_and_leaves_no_port_taken(server: RunningServer) -> None:
    baseline = server.metrics()[PORTS]
    cases = all_cases()
    answers: dict[int, int] = {}
    wrong: list[str] = []
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((CARRIER, 0))
        sock.settimeout(10)
        port = sock.getsockname()[1]
        for case in cases:
            data, branch, call_id = invite(port, case.body)
            sock.sendto(data, server.udp)
            reply = final_answer(sock)
            sock.sendto(ack(port, branch, call_id, reply), server.udp)
            answers[reply.status] = answers.get(reply.status, 0) + 1
            refused = case.expected != ACCEPTED
            if (reply.status != case.expected) if refused else (reply.status in (400, 488)):
                wrong.append(f"{case.name}: {reply.status} {reply.reason}")
            if (in_use := ports_back_to(server, baseline)) != baseline:
                wrong.append(f"{case.name}: {in_use} ports in use after it, not {baseline}")
    elapsed = time.monotonic() - start
    print(f"{len(cases)} offers in {elapsed:.1f} s, answers {answers}, ports {baseline} after each")
    assert not wrong, wrong
    assert answers.get(400, 0) >= 100
    assert answers.get(488, 0) >= 50
    assert server.process.poll() is None


def test_a_64_kb_attribute_line_is_refused_before_the_sdp_is_read(server: RunningServer) -> None:
    """Over TCP the framer refuses the Content-Length (over 65,536) and closes the connection;
    a UDP datagram cannot hold 64 KB, so the most it can (a 60 KB line) gets 413 from the caps."""
    baseline = server.metrics()[PORTS]
    body = offer(media=("m=audio 40000 RTP/AVP 0", "a=x-junk:" + "A" * 65_536))
    with socket.create_connection(server.tcp, timeout=10, source_address=(CARRIER, 0)) as conn:
        data, _, _ = invite(conn.getsockname()[1], body, transport="TCP")
        conn.sendall(data)
        try:
            closed = conn.recv(65536) == b""
        except ConnectionResetError:  # closed with our unread bytes in its buffer: a reset
            closed = True
    body = offer(media=("m=audio 40000 RTP/AVP 0", "a=x-junk:" + "A" * 60_000))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((CARRIER, 0))
        sock.settimeout(10)
        data, _, _ = invite(sock.getsockname()[1], body)
        sock.sendto(data, server.udp)
        reply = final_answer(sock)
    print(f"64 KB a= line: TCP closed={closed}; 60 KB over UDP: {reply.status} {reply.reason}")
    assert closed
    assert reply.status == 413
    assert ports_back_to(server, baseline) == baseline
    assert server.process.poll() is None
