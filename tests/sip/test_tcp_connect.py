"""Our own TCP connections (to a TCP trunk, to a phone registered over TCP): messages sent to a
destination while its connection is being opened wait for that one connection and leave in
order; a destination that refuses is reported once, not once per message. Our connection is
trusted from the start: the per-source limit (meant for what connects to us) does not refuse
it, and when the connection cap refuses it the failure is reported, not dropped silently.
Real sockets on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from pbx.sip.message import Address
from pbx.sip.transport import SipTransport, TcpLimits, _TcpConnection

MESSAGES = [f"OPTIONS sip:trunk SIP/2.0\r\nX-N: {n}\r\n\r\n".encode() for n in range(5)]


def _hold(transport: SipTransport, peer: Address, *, trusted: bool) -> None:
    """A connection already held, admitted as ``connection_made`` admits one."""
    conn = _TcpConnection(transport, ("127.0.0.1", 5060))
    conn.peer = peer
    assert transport._admit(conn)
    if trusted:
        transport.trust(conn.id)


class _Trunk:
    """A TCP listener on loopback that keeps what it receives."""

    def __init__(self) -> None:
        self.accepted = 0
        self.received = bytearray()
        self.everything = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        while chunk := await reader.read(65536):
            self.received.extend(chunk)
            if len(self.received) >= sum(map(len, MESSAGES)):
                self.everything.set()
        writer.close()


@contextlib.asynccontextmanager
async def _trunk_and_transport(
    limits: TcpLimits,
) -> AsyncIterator[tuple[_Trunk, SipTransport, Address]]:
    """A trunk listening on loopback, our transport, and the trunk's address; both closed."""
    trunk = _Trunk()
    server = await asyncio.start_server(trunk.serve, "127.0.0.1", 0)
    transport = SipTransport(lambda _: None, limits)
    try:
        yield trunk, transport, server.sockets[0].getsockname()[:2]
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_a_burst_to_a_destination_opens_one_connection_and_keeps_its_order() -> None:
    async with _trunk_and_transport(TcpLimits()) as (trunk, transport, dest):
        for data in MESSAGES:  # all before the connection is open
            assert transport.send(data, dest, "TCP")
        async with asyncio.timeout(5):
            await trunk.everything.wait()
        assert bytes(trunk.received) == b"".join(MESSAGES)
        assert trunk.accepted == 1
        assert transport.tcp_connection_count == 1
        # Once open, the next message takes the same connection.
        assert transport.send(MESSAGES[0], dest, "TCP")
        assert trunk.accepted == 1


@pytest.mark.asyncio
async def test_a_destination_that_refuses_is_reported_once_for_a_burst() -> None:
    with socket.socket() as probe:  # a port nobody listens on (bound, then closed)
        probe.bind(("127.0.0.1", 0))
        dest: Address = probe.getsockname()[:2]
    failed: list[Address] = []
    reported = asyncio.Event()
    transport = SipTransport(lambda _: None, TcpLimits())

    def on_send_failed(address: Address) -> None:
        failed.append(address)
        reported.set()

    transport.on_send_failed = on_send_failed
    try:
        for data in MESSAGES:
            assert transport.send(data, dest, "TCP")
        async with asyncio.timeout(5):
            await reported.wait()
            if transport._tasks:  # every connect attempt over
                await asyncio.wait(set(transport._tasks))
        await asyncio.sleep(0)  # the reports they scheduled (call_soon) have run
        assert failed == [dest]
        assert transport._connecting == {}
    finally:
        await transport.close()


@pytest.mark.asyncio
async def test_our_connection_is_not_refused_by_the_per_source_limit() -> None:
    limits = TcpLimits(max_connections_per_source=1)
    async with _trunk_and_transport(limits) as (trunk, transport, dest):
        # The trunk's host already has its one connection to us (untrusted so far).
        _hold(transport, ("127.0.0.1", 40000), trusted=False)
        for data in MESSAGES:
            assert transport.send(data, dest, "TCP")
        async with asyncio.timeout(5):
            await trunk.everything.wait()
        assert bytes(trunk.received) == b"".join(MESSAGES)
        assert transport.tcp_connection_count == 2


@pytest.mark.asyncio
async def test_our_connection_refused_by_the_cap_is_reported_once() -> None:
    failed: list[Address] = []
    async with _trunk_and_transport(TcpLimits(max_connections=1)) as (trunk, transport, dest):
        transport.on_send_failed = failed.append
        _hold(transport, ("192.0.2.1", 40000), trusted=True)  # a phone's: never evicted
        for data in MESSAGES:
            assert transport.send(data, dest, "TCP")
        async with asyncio.timeout(5):
            while transport._tasks:  # the connect attempt over
                await asyncio.wait(set(transport._tasks))
        await asyncio.sleep(0)  # the report it scheduled (call_soon) has run
        assert failed == [dest]
        assert transport._connecting == {}
        assert transport.tcp_connection_count == 1
        assert trunk.received == b""
