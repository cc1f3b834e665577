"""Our own TCP connections (to a TCP trunk, to a phone registered over TCP): messages sent to a
destination while its connection is being opened wait for that one connection and leave in
order; a destination that refuses is reported once, not once per message. Real sockets on
loopback."""

from __future__ import annotations

import asyncio
import socket

import pytest

from pbx.sip.message import Address
from pbx.sip.transport import SipTransport, TcpLimits

MESSAGES = [f"OPTIONS sip:trunk SIP/2.0\r\nX-N: {n}\r\n\r\n".encode() for n in range(5)]


@pytest.mark.asyncio
async def test_a_burst_to_a_destination_opens_one_connection_and_keeps_its_order() -> None:
    accepted: list[asyncio.StreamReader] = []
    received = bytearray()
    everything = asyncio.Event()

    async def trunk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(reader)
        while chunk := await reader.read(65536):
            received.extend(chunk)
            if len(received) >= sum(map(len, MESSAGES)):
                everything.set()
        writer.close()

    server = await asyncio.start_server(trunk, "127.0.0.1", 0)
    transport = SipTransport(lambda _: None, TcpLimits())
    try:
        dest: Address = server.sockets[0].getsockname()[:2]
        for data in MESSAGES:  # all before the connection is open
            assert transport.send(data, dest, "TCP")
        async with asyncio.timeout(5):
            await everything.wait()
        assert bytes(received) == b"".join(MESSAGES)
        assert len(accepted) == 1
        assert transport.tcp_connection_count == 1
        # Once open, the next message takes the same connection.
        assert transport.send(MESSAGES[0], dest, "TCP")
        assert len(accepted) == 1
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()


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
