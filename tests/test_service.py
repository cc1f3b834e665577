"""SipService without sockets: messages in through ``on_inbound``, out through a fake transport."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from pbx.clock import Clock, FakeClock
from pbx.config.holder import ConfigHolder
from pbx.config.load import load_config
from pbx.metrics import Registry
from pbx.service import SipService
from pbx.sip.message import Address, SipResponse
from pbx.sip.parse import parse_message
from pbx.sip.transport import Inbound
from pbx.store import Store
from tests.integration.harness import write_config

PHONE: Address = ("127.0.0.1", 5070)
LOCAL: Address = ("127.0.0.1", 5060)


@dataclass
class FakeTransport:
    """Collects what the service sends."""

    sent: list[tuple[bytes, Address]] = field(default_factory=list)
    on_connection_closed: object = None
    trusted: set[int] = field(default_factory=set)

    def trust(self, connection_id: int) -> None:
        """A connection the service authenticated a phone over (kept, not evicted first)."""
        self.trusted.add(connection_id)

    def send(
        self,
        data: bytes,
        dest: Address,
        transport: str | None = None,
        connection_id: int | None = None,
    ) -> bool:
        self.sent.append((data, dest))
        return True

    def responses(self) -> list[SipResponse]:
        out = [parse_message(data) for data, _ in self.sent]
        self.sent.clear()
        return [r for r in out if isinstance(r, SipResponse)]


@contextlib.asynccontextmanager
async def running_service(
    config: Path, *, clock: Clock | None = None, transport: FakeTransport | None = None
) -> AsyncIterator[tuple[SipService, FakeTransport]]:
    """A started service on ``config`` (its SQLite store, a fake transport: ``transport`` or a
    new one; ``clock`` or the system's), stopped and its store closed on the way out."""
    snapshot = load_config(config)
    store = await Store.open_in(snapshot.server.storage.data_dir)
    svc = SipService(ConfigHolder(snapshot), store, Registry(), clock)
    fake = transport or FakeTransport()
    svc.attach(fake)  # type: ignore[arg-type]
    await svc.start()
    try:
        yield svc, fake
    finally:
        await svc.stop()
        await store.close()


@pytest_asyncio.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[SipService, FakeTransport]]:
    async with running_service(write_config(tmp_path / "pbx")) as started:
        yield started


def register(cseq: int, *, branch: str = "z9hG4bK-1", authorization: str = "") -> bytes:
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    return (
        "REGISTER sip:acme.example SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:1001@acme.example>;tag=ft\r\n"
        "To: <sip:1001@acme.example>\r\n"
        "Call-ID: reg-1\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        "Contact: <sip:1001@127.0.0.1:5070>\r\n"
        "Expires: 600\r\n"
        f"{auth}Content-Length: 0\r\n\r\n"
    ).encode()


def answer(challenge: SipResponse, cseq: int) -> str:
    value = challenge.header("WWW-Authenticate") or ""
    fields = dict(re.findall(r'(\w+)="?([^",]+)"?', value))
    assert fields["algorithm"] == "MD5"

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"1001:{fields['realm']}:secret1001")
    ha2 = md5("REGISTER:sip:acme.example")
    response = md5(f"{ha1}:{fields['nonce']}:00000001:c0ffee:auth:{ha2}")
    opaque = f', opaque="{fields["opaque"]}"' if "opaque" in fields else ""
    return (
        f'Digest username="1001", realm="{fields["realm"]}", nonce="{fields["nonce"]}", '
        f'uri="sip:acme.example", response="{response}", algorithm=MD5, qop=auth, '
        f'nc=00000001, cnonce="c0ffee"{opaque}'
    )


@pytest.mark.asyncio
async def test_challenge_is_stateless_and_a_retransmission_gets_the_same_tag(
    service: tuple[SipService, FakeTransport],
) -> None:
    svc, fake = service
    svc.on_inbound(Inbound(register(1), PHONE, LOCAL, "UDP"))
    svc.on_inbound(Inbound(register(1), PHONE, LOCAL, "UDP"))  # a retransmission
    first, again = fake.responses()
    assert (first.status, again.status) == (401, 401)
    assert first.to.tag is not None
    assert again.to.tag == first.to.tag  # RFC 3261 8.2.7: same request, same tag
    assert len(svc.table) == 0  # no transaction was kept for either
    assert first.via[0].params == (
        ("branch", "z9hG4bK-1"),
        ("rport", "5070"),
        ("received", "127.0.0.1"),
    )
    # Another request (new branch and CSeq) gets another tag.
    svc.on_inbound(Inbound(register(2, branch="z9hG4bK-2"), PHONE, LOCAL, "UDP"))
    (other,) = fake.responses()
    assert other.status == 401
    assert other.to.tag != first.to.tag


@pytest.mark.asyncio
async def test_the_authenticated_register_is_stateful_and_stored(
    service: tuple[SipService, FakeTransport],
) -> None:
    svc, fake = service
    svc.on_inbound(Inbound(register(1), PHONE, LOCAL, "UDP"))
    (challenge,) = fake.responses()
    authorized = register(2, branch="z9hG4bK-2", authorization=answer(challenge, 2))
    svc.on_inbound(Inbound(authorized, PHONE, LOCAL, "UDP"))
    await svc.store.flush()
    # The 200 leaves once the binding is committed (the writer resolves the futures).
    for _ in range(5):
        if fake.sent:
            break
        await svc.store.flush()
    (ok,) = fake.responses()
    assert ok.status == 200
    assert len(svc.table) == 1  # its transaction absorbs retransmissions (Timer J)
    svc.on_inbound(Inbound(authorized, PHONE, LOCAL, "UDP"))
    (again,) = fake.responses()
    assert again.status == 200
    assert again.to.tag == ok.to.tag
    stored = await svc.store.load_bindings(0)
    assert [(b.extension, b.contact) for b in stored] == [("1001", "sip:1001@127.0.0.1:5070")]


@pytest.mark.asyncio
async def test_the_service_stamps_bindings_with_its_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock(wall=1_800_000_000.0)
    async with running_service(write_config(tmp_path / "pbx"), clock=clock) as (svc, fake):
        svc.on_inbound(Inbound(register(1), PHONE, LOCAL, "UDP"))
        (challenge,) = fake.responses()
        clock.advance(5.0)
        authorized = register(2, branch="z9hG4bK-2", authorization=answer(challenge, 2))
        svc.on_inbound(Inbound(authorized, PHONE, LOCAL, "UDP"))
        (binding,) = list(svc.registrations)
        assert binding.registered_at == 1_800_000_005.0
        (view,) = svc.registrations_view()
        assert view["expires_in"] == 600
        clock.advance(100.0)
        (view,) = svc.registrations_view()
        assert view["expires_in"] == 500
