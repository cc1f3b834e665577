"""Keep-alive checks and reachability through SipService, without sockets (fake clock and
transport): a vanished phone goes offline to routing, a silent-by-design one does not, a closed
TCP connection is offline at once, and the digest algorithms offered follow the tenant."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from pbx.clock import FakeClock
from pbx.config.model import Extension, TenantConfig, TenantId
from pbx.keepalive import probe_timeout
from pbx.service import SipService
from pbx.sip.build import build_response
from pbx.sip.message import SipRequest
from pbx.sip.parse import parse_message
from pbx.sip.transaction import TransactionTerminated, TransportFailed
from pbx.sip.transport import Inbound, ListenAddress
from tests.integration.harness import DEFAULT_TENANT, write_config
from tests.test_service import LOCAL, PHONE, FakeTransport, answer, register, running_service

INTERVAL = 2.0


class ProbeTransport(FakeTransport):
    """The fake transport, with the listening addresses a probe's Via is written from."""

    listening: tuple[ListenAddress, ...] = (ListenAddress("UDP", *LOCAL),)


E1001 = Extension("1001")
Started = tuple[SipService, FakeTransport, FakeClock]
Factory = Callable[[str], Awaitable[Started]]


@pytest_asyncio.fixture
async def start(tmp_path: Path) -> AsyncIterator[Factory]:
    """Start a service whose tenant file has ``head_extra`` added to its [tenant] table."""
    roots = iter(range(100))
    async with contextlib.AsyncExitStack() as running:

        async def factory(head_extra: str) -> Started:
            # The harness's tenant turns checks off for its scripted clients: start from the
            # default.
            base = DEFAULT_TENANT.replace("qualify_seconds = 0\n", "")
            tenant = base.replace("default = true", f"default = true\n{head_extra}")
            config = write_config(tmp_path / f"pbx{next(roots)}", tenants={"acme": tenant})
            clock = FakeClock()
            started = running_service(config, clock=clock, transport=ProbeTransport())
            svc, fake = await running.enter_async_context(started)
            return svc, fake, clock

        yield factory


def sign_in(
    svc: SipService,
    fake: FakeTransport,
    transport: str = "UDP",
    cid: int | None = None,
    cseq: int = 1,
) -> None:
    svc.on_inbound(Inbound(register(cseq, branch=f"z9hG4bK-{cseq}"), PHONE, LOCAL, "UDP"))
    (challenge,) = fake.responses()
    authorized = register(
        cseq + 1, branch=f"z9hG4bK-{cseq + 1}", authorization=answer(challenge, cseq + 1)
    )
    if transport == "TCP":
        authorized = authorized.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
    svc.on_inbound(Inbound(authorized, PHONE, LOCAL, transport, cid))  # type: ignore[arg-type]
    fake.sent.clear()
    assert svc.registrations.bindings_of(TenantId("acme"), E1001)


def tenant(svc: SipService) -> TenantConfig:
    return svc.holder.current.tenants[TenantId("acme")]


def online(svc: SipService, clock: FakeClock) -> bool:
    return svc.presence(tenant(svc), E1001, clock.wall()).online


def tick(
    svc: SipService, fake: FakeTransport, clock: FakeClock, seconds: float
) -> list[SipRequest]:
    """Advance the clock, fire the keep-alive timer, return the OPTIONS sent."""
    clock.advance(seconds)
    svc._on_keepalive_timer()
    out = [parse_message(data) for data, _ in fake.sent]
    fake.sent.clear()
    return [m for m in out if isinstance(m, SipRequest)]


def reply(svc: SipService, options: SipRequest, status: int) -> None:
    response = build_response(options, status, to_tag="phone")
    svc.on_inbound(Inbound(response.to_bytes(), PHONE, LOCAL, "UDP"))


@pytest.mark.asyncio
async def test_a_phone_that_answered_and_vanished_is_offline_within_interval_plus_retry(
    start: Factory,
) -> None:
    svc, fake, clock = await start(f"qualify_seconds = {INTERVAL:.0f}")
    sign_in(svc, fake)
    (first,) = tick(svc, fake, clock, 1.0)  # probed a second after registering
    assert first.method == "OPTIONS"
    assert str(first.uri) == "sip:1001@127.0.0.1:5070"
    assert fake.sent == []
    reply(svc, first, 405)  # any answer counts, even 405 Method Not Allowed
    assert svc.keepalive.answered_once(next(iter(svc.registrations)).key)
    # Killed now. Probe at its phase, one retry, then marked: within interval + 2 timeouts.
    waited, sent = 0.0, []
    step = 0.1
    while online(svc, clock):
        sent += tick(svc, fake, clock, step)
        waited += step
        assert waited <= INTERVAL + 2 * probe_timeout(INTERVAL) + step
    assert len(sent) == 2
    assert sent[0].call_id == sent[1].call_id  # the retry is the same request again
    assert sent[0].via[0].branch == sent[1].via[0].branch
    assert svc.registrations.unreachable
    # Back: the next answered probe makes it reachable again.
    while not online(svc, clock):
        for options in tick(svc, fake, clock, step):
            reply(svc, options, 200)
    assert not svc.registrations.unreachable


@pytest.mark.asyncio
async def test_a_phone_that_never_answers_options_keeps_getting_calls(start: Factory) -> None:
    # pyVoIP 1.6 never answers OPTIONS: judged by its registration alone.
    svc, fake, clock = await start(f"qualify_seconds = {INTERVAL:.0f}")
    sign_in(svc, fake)
    sent = []
    for _ in range(100):
        sent += tick(svc, fake, clock, 0.1)
    assert len(sent) >= 6
    assert online(svc, clock)


@pytest.mark.asyncio
async def test_checks_are_on_by_default_and_zero_turns_them_off(start: Factory) -> None:
    svc, fake, clock = await start("")
    assert tenant(svc).qualify_seconds == 30
    sign_in(svc, fake)
    assert [m.method for m in tick(svc, fake, clock, 1.0)] == ["OPTIONS"]
    off, fake_off, clock_off = await start("qualify_seconds = 0")
    sign_in(off, fake_off)
    assert tick(off, fake_off, clock_off, 60.0) == []
    assert len(off.keepalive) == 0


@pytest.mark.asyncio
async def test_a_tcp_phone_whose_connection_closes_is_offline_at_once(start: Factory) -> None:
    svc, fake, clock = await start("qualify_seconds = 0")  # even with keep-alives off
    sign_in(svc, fake, "TCP", 7)
    (binding,) = svc.registrations
    assert binding.connection_id == "7"
    assert online(svc, clock)
    svc._on_connection_closed(7)
    assert not online(svc, clock)
    # It connects again and registers: reachable again.
    sign_in(svc, fake, "TCP", 8, cseq=3)
    assert online(svc, clock)


@pytest.mark.asyncio
async def test_the_call_engine_hook_marks_a_contact_that_failed(start: Factory) -> None:
    svc, fake, clock = await start("")
    sign_in(svc, fake)
    (binding,) = svc.registrations
    svc.contact_failed(binding.key, "tcp connect refused")
    assert not online(svc, clock)


@pytest.mark.asyncio
async def test_md5_only_by_default_and_a_tenant_turns_sha256_on(start: Factory) -> None:
    svc, fake, _ = await start("")
    svc.on_inbound(Inbound(register(1), PHONE, LOCAL, "UDP"))
    (challenge,) = fake.responses()
    offered = [v for k, v in challenge.headers if k == "WWW-Authenticate"]
    assert len(offered) == 1
    assert "algorithm=MD5" in offered[0]
    sha, fake_sha, _ = await start('auth_algorithms = ["SHA-256", "MD5"]')
    sha.on_inbound(Inbound(register(1), PHONE, LOCAL, "UDP"))
    (challenge,) = fake_sha.responses()
    offered = [v for k, v in challenge.headers if k == "WWW-Authenticate"]
    assert ["algorithm=SHA-256" in offered[0], "algorithm=MD5" in offered[1]] == [True, True]


@pytest.mark.asyncio
async def test_a_failed_tcp_send_fails_that_peers_transactions_and_its_tcp_contacts_only(
    start: Factory,
) -> None:
    svc, fake, clock = await start("")
    sign_in(svc, fake, "TCP", 7)
    assert online(svc, clock)
    outcomes: dict[str, list[object]] = {"phone": [], "trunk": []}
    trunk = ("127.0.0.2", 5080)
    for name, peer in (("phone", PHONE), ("trunk", trunk)):
        request = parse_message(
            (
                f"OPTIONS sip:{peer[0]}:{peer[1]} SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP {LOCAL[0]}:{LOCAL[1]};branch=z9hG4bK-fail-{name}\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:pbx@acme.example>;tag=f\r\n"
                f"To: <sip:{peer[0]}>\r\nCall-ID: fail-{name}\r\nCSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        )
        assert isinstance(request, SipRequest)
        svc.send_request(request, peer, outcomes[name].append, reliable=True)
    live = len(svc.table)
    # A TCP send to the trunk fails (connect refused): its transaction ends at once, the
    # phone's does not, and the phone's TCP contact stays reachable.
    svc._on_send_failed(trunk)
    assert [type(event) for event in outcomes["trunk"]] == [
        TransportFailed,
        TransactionTerminated,
    ]
    assert outcomes["phone"] == []
    assert len(svc.table) == live - 1
    assert online(svc, clock)
    # Then one to the phone's address: its transaction fails and its TCP contact is offline.
    svc._on_send_failed(PHONE)
    assert [type(event) for event in outcomes["phone"]] == [
        TransportFailed,
        TransactionTerminated,
    ]
    assert not online(svc, clock)
