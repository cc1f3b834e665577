"""Issue 17 item 5: a TCP connection that has sent no SIP message is closed after
``TcpLimits.silent_seconds`` (10 s), keep-alive pings included; one that sent a message is kept
for the idle time-out (600 s).

The transport schedules its time-outs on the event loop (``call_later``), so the 10 s is read
from the scheduled handle without waiting; the closing itself runs on loopback with the limit
set to 0.2 s (``TcpLimits`` is injected as the server does).
"""

from __future__ import annotations

import asyncio

import pytest

from pbx.sip.transport import Inbound, SipTransport, TcpLimits, _TcpConnection

OPTIONS = (
    b"OPTIONS sip:pbx.example SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bK-silent\r\n"
    b"From: <sip:a@pbx.example>;tag=1\r\nTo: <sip:pbx.example>\r\n"
    b"Call-ID: silent@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


async def _closed(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            return await reader.read(1024) == b""
    except TimeoutError:
        return False


def _on_admit(transport: SipTransport, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """An event set once the transport has admitted a connection (``connection_made``)."""
    admitted = asyncio.Event()
    admit = transport._admit

    def admitting(conn: _TcpConnection) -> bool:
        ok = admit(conn)
        admitted.set()
        return ok

    monkeypatch.setattr(transport, "_admit", admitting)
    return admitted


@pytest.mark.asyncio
async def test_a_silent_connection_is_scheduled_to_close_after_10_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spoke = asyncio.Event()
    transport = SipTransport(lambda packet: spoke.set())
    admitted = _on_admit(transport, monkeypatch)
    await transport.start([("TCP", "127.0.0.1", 0)])
    port = transport.listening[0].port
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(5):
            await admitted.wait()
        [conn] = transport._connections.values()
        loop = asyncio.get_running_loop()
        assert conn._idle is not None
        left = conn._idle.when() - loop.time()
        print(f"silent connection closes in {left:.2f} s")
        assert 9.5 < left <= 10.0
        writer.write(OPTIONS)
        await writer.drain()
        async with asyncio.timeout(5):
            await spoke.wait()
        assert conn.spoke
        assert conn._idle is not None
        assert conn._idle.when() - loop.time() > 500  # spoke: the 600 s idle time-out now
        writer.close()
    finally:
        await transport.close()


@pytest.mark.asyncio
async def test_silent_and_ping_only_connections_close_and_a_speaking_one_stays() -> None:
    received: list[Inbound] = []
    transport = SipTransport(received.append, TcpLimits(silent_seconds=0.2))
    await transport.start([("TCP", "127.0.0.1", 0)])
    port = transport.listening[0].port
    try:
        loop = asyncio.get_running_loop()
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
        ping_reader, ping = await asyncio.open_connection("127.0.0.1", port)
        talk_reader, talk = await asyncio.open_connection("127.0.0.1", port)
        talk.write(OPTIONS)
        start = loop.time()
        while not ping_reader.at_eof() and loop.time() - start < 2.0:
            ping.write(b"\r\n\r\n")  # keep-alives every 0.05 s do not keep it open
            await asyncio.sleep(0.05)
            while ping_reader._buffer:  # type: ignore[attr-defined]  # the pongs
                await ping_reader.read(1024)
        assert await _closed(silent_reader, 2.0)
        assert await _closed(ping_reader, 2.0)
        elapsed = loop.time() - start
        print(f"silent and ping-only connections closed after {elapsed:.2f} s")
        assert not await _closed(talk_reader, 0.3)  # spoke: still open
        assert len(received) == 1
        assert transport.tcp_connection_count == 1
        for writer in (silent, ping, talk):
            writer.close()
    finally:
        await transport.close()
