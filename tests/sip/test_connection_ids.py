"""Connection ids outlive the process in stored bindings: a new process must not reuse them."""

from __future__ import annotations

import asyncio

import pytest

from pbx.sip.transport import Inbound, SipTransport

OPTIONS = (
    b"OPTIONS sip:pbx@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bK-ids\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:probe@127.0.0.1>;tag=1\r\n"
    b"To: <sip:pbx@127.0.0.1>\r\n"
    b"Call-ID: ids-1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


async def _first_connection_id() -> int:
    """A fresh transport (as a new process has) on loopback: the id of its first connection."""
    arrived: asyncio.Future[Inbound] = asyncio.get_running_loop().create_future()

    def handler(packet: Inbound) -> None:
        if not arrived.done():
            arrived.set_result(packet)

    transport = SipTransport(handler)
    await transport.start([("TCP", "127.0.0.1", 0)])
    _, writer = await asyncio.open_connection("127.0.0.1", transport.listening[0].port)
    try:
        writer.write(OPTIONS)
        await writer.drain()
        packet = await asyncio.wait_for(arrived, 5)
        assert packet.connection_id is not None
        return packet.connection_id
    finally:
        writer.close()
        await transport.close()


@pytest.mark.asyncio
async def test_two_processes_number_their_connections_apart() -> None:
    first, second = await _first_connection_id(), await _first_connection_id()
    assert first != 1
    assert second != 1
    assert first != second
