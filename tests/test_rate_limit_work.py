"""Issue 16: the rate limit counts requests that start work, not every datagram.

Driven through ``on_inbound`` with the fake transport and clock of tests/test_hardening.py.
A phone behind one NAT address answers our requests (responses, retransmitted ones included),
acknowledges and sends CRLF keep-alives: none of it may use up ``max_requests_per_second``.
"""

from __future__ import annotations

import pytest

from pbx.security import starts_work
from pbx.sip.message import SipRequest
from pbx.sip.parse import parse_message
from pbx.sip.transport import Inbound
from tests.test_hardening import ATTACKER, Service, request, service
from tests.test_service import LOCAL

__all__ = ["service"]  # the fixture, imported


def test_what_starts_work() -> None:
    assert starts_work(b"OPTIONS sip:a@b SIP/2.0\r\n")
    assert starts_work(b"\r\nINVITE sip:a@b SIP/2.0\r\n")
    assert not starts_work(b"SIP/2.0 200 OK\r\n")
    assert not starts_work(b"ACK sip:a@b SIP/2.0\r\n")
    assert not starts_work(b"\r\n\r\n")
    assert not starts_work(b"\x00")


def _our_options(n: int) -> SipRequest:
    message = parse_message(
        (
            f"OPTIONS sip:1001@{ATTACKER[0]}:{ATTACKER[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOCAL[0]}:{LOCAL[1]};branch=z9hG4bK-ours{n}\r\n"
            f"From: <sip:pbx@acme.example>;tag=o{n}\r\nTo: <sip:1001@acme.example>\r\n"
            f"Call-ID: ours-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, SipRequest)
    return message


@pytest.mark.asyncio
async def test_responses_acks_and_keepalives_never_throttle_the_next_request(
    service: Service,
) -> None:
    svc, fake, _ = service
    limit = svc.holder.current.server.security.max_requests_per_second
    answers: list[object] = []
    # Three times the limit of our own requests to the phone, each answered and the answer
    # retransmitted (absorbed by its transaction), within the same instant.
    for n in range(3 * limit):
        svc.send_request(_our_options(n), ATTACKER, answers.append)
    svc.flush()
    fake.sent.clear()
    for n in range(3 * limit):
        ours = _our_options(n)
        response = (
            "SIP/2.0 200 OK\r\n"
            f"Via: SIP/2.0/UDP {LOCAL[0]}:{LOCAL[1]};branch=z9hG4bK-ours{n}\r\n"
            f"From: <sip:pbx@acme.example>;tag=o{n}\r\n"
            "To: <sip:1001@acme.example>;tag=ph\r\n"
            f"Call-ID: {ours.call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        for _ in range(2):
            svc.on_inbound(Inbound(response, ATTACKER, LOCAL, "UDP"))
        svc.on_inbound(Inbound(b"\r\n\r\n", ATTACKER, LOCAL, "UDP"))
        ack = request("ACK", branch=f"z9hG4bK-ack{n}")
        svc.on_inbound(Inbound(ack, ATTACKER, LOCAL, "UDP"))
    assert len(answers) >= 3 * limit  # every answer reached its transaction
    svc.on_inbound(Inbound(request("OPTIONS", branch="z9hG4bK-next"), ATTACKER, LOCAL, "UDP"))
    (answer,) = fake.responses()
    assert answer.status == 200
    dropped = svc.metrics.metrics["pbx_sip_messages_dropped_total"].values
    assert dropped.get((("reason", "throttled"),), 0) == 0


@pytest.mark.asyncio
async def test_requests_and_stray_responses_are_still_charged(service: Service) -> None:
    svc, fake, _ = service
    limit = svc.holder.current.server.security.max_requests_per_second
    stray = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-nobody\r\n"
        b"From: <sip:a@acme.example>;tag=a\r\nTo: <sip:b@acme.example>;tag=b\r\n"
        b"Call-ID: stray\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    for _ in range(limit):
        svc.on_inbound(Inbound(stray, ATTACKER, LOCAL, "UDP"))
    svc.on_inbound(Inbound(request("OPTIONS", branch="z9hG4bK-late"), ATTACKER, LOCAL, "UDP"))
    assert fake.responses() == []  # throttled: the stray responses used the bucket up
