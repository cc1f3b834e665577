"""A TLS handshake in progress counts toward the connection caps (issue #18): half-open
handshakes cannot hold more than the caps allow, the oldest untrusted one makes room for a new
connection, and a connection that finishes its handshake keeps the slot it was given."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

import pytest

from pbx.sip.tls import TlsCredentials
from pbx.sip.transport import Inbound, SipTransport, TcpLimits, TlsSettings
from tests.tlscerts import make_certificate


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> TlsCredentials:
    return TlsCredentials(*make_certificate(tmp_path_factory.mktemp("caps"), "c"), time.time())


def _client() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in 5 s")


async def _start(credentials: TlsCredentials, limits: TcpLimits) -> tuple[SipTransport, int]:
    received: list[Inbound] = []
    transport = SipTransport(received.append, limits, TlsSettings(credentials.context, 30.0))
    await transport.start([("TLS", "127.0.0.1", 0)])
    return transport, transport.listening[0].port


@pytest.mark.asyncio
async def test_half_open_handshakes_count_toward_the_per_source_cap(
    credentials: TlsCredentials,
) -> None:
    transport, port = await _start(credentials, TcpLimits(max_connections_per_source=2))
    try:
        # Two clients connect and never send a ClientHello (handshake time-out is 30 s).
        stalled = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await _until(lambda: transport.tcp_connection_count == 2)
        # A third from the same source is closed at once, not after the handshake time-out.
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert time.monotonic() - started < 5
        assert transport.tcp_connection_count == 2
        writer.close()
        # A stalled client that gives up frees its slot; a real phone then gets it.
        stalled[0][1].close()
        await _until(lambda: transport.tcp_connection_count == 1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_client())
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        assert transport.tcp_connection_count == 2  # the slot it was admitted to, no second
        writer.close()
        stalled[1][1].close()
        await _until(lambda: transport.tcp_connection_count == 0)
    finally:
        await transport.close()


@pytest.mark.asyncio
async def test_at_the_total_cap_the_oldest_half_open_handshake_is_evicted(
    credentials: TlsCredentials,
) -> None:
    transport, port = await _start(credentials, TcpLimits(max_connections=2))
    try:
        first = await asyncio.open_connection("127.0.0.1", port)
        await _until(lambda: transport.tcp_connection_count == 1)
        second = await asyncio.open_connection("127.0.0.1", port)
        await _until(lambda: transport.tcp_connection_count == 2)
        # A phone arriving at the cap: the oldest handshake that never started is closed.
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_client())
        assert await asyncio.wait_for(first[0].read(), 5) == b""
        assert transport.evicted == 1
        assert transport.tcp_connection_count == 2
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        for _, w in (first, second, (reader, writer)):
            w.close()
        await _until(lambda: transport.tcp_connection_count == 0)
    finally:
        await transport.close()
