"""Issue 15: responses to our own requests are never charged against the per-source rate
limit (the keep-alive answers of many phones behind one NAT address); a response that answers
nothing we sent still is. Without sockets (fake clock and transport)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from pbx.clock import FakeClock
from pbx.service import SipService
from pbx.sip.build import build_response
from pbx.sip.message import SipRequest
from pbx.sip.parse import parse_message
from pbx.sip.transaction import ResponseReceived, TxEvent
from pbx.sip.transport import Inbound
from tests.integration.harness import DEFAULT_TENANT, write_config
from tests.test_service import LOCAL, FakeTransport, running_service

NAT = ("198.51.100.9", 5060)  # one public address for many phones
LIMIT = 5


@pytest_asyncio.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[SipService, FakeTransport, FakeClock]]:
    extra = f"[security]\nmax_requests_per_second = {LIMIT}\n"
    config = write_config(tmp_path / "pbx", tenants={"acme": DEFAULT_TENANT}, server_extra=extra)
    clock = FakeClock()
    async with running_service(config, clock=clock) as (svc, fake):
        yield svc, fake, clock


def options(index: int) -> SipRequest:
    text = (
        f"OPTIONS sip:phone{index}@{NAT[0]}:{NAT[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ours-{index}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:pbx@127.0.0.1>;tag=ours{index}\r\n"
        f"To: <sip:phone{index}@acme.example>\r\n"
        f"Call-ID: ours-{index}@pbx\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, SipRequest)
    return msg


def dropped(svc: SipService, reason: str) -> float:
    return svc.m_dropped.values.get((("reason", reason),), 0.0)


@pytest.mark.asyncio
async def test_answers_to_our_requests_are_not_charged_stray_responses_are(
    service: tuple[SipService, FakeTransport, FakeClock],
) -> None:
    svc, _, _ = service
    answered: list[TxEvent] = []
    requests = [options(i) for i in range(10 * LIMIT)]
    for request in requests:
        svc.send_request(request, NAT, answered.append)
    # Fifty answers from one address in the same instant: ten times its rate, none dropped.
    for request in requests:
        svc.on_inbound(Inbound(build_response(request, 200).to_bytes(), NAT, LOCAL, "UDP"))
    assert len([e for e in answered if isinstance(e, ResponseReceived)]) == 10 * LIMIT
    assert dropped(svc, "throttled") == 0
    # Responses to nothing we sent are charged (after the parse that tells them apart).
    for index in range(10 * LIMIT):
        stray = build_response(options(1000 + index), 200).to_bytes()
        svc.on_inbound(Inbound(stray, NAT, LOCAL, "UDP"))
    assert dropped(svc, "stray_response") == 10 * LIMIT
    # ... and the source's own requests now find its rate used up.
    svc.on_inbound(Inbound(options(9999).to_bytes(), NAT, LOCAL, "UDP"))
    assert dropped(svc, "throttled") == 1
