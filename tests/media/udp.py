"""Loopback UDP endpoints for the media tests: fake phones that send and collect datagrams."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

Address = tuple[str, int]
HOST = "127.0.0.1"
# Relay ports in tests come from this range, away from the default 20000-29999.
TEST_PORTS = (31000, 31999)


async def until(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    """Wait until ``condition()`` holds (a datagram in flight on loopback has been handled);
    fail after ``seconds``. Only for what nothing observable answers, such as a dropped packet
    seen in a counter: there is no event to wait on, so the counter is polled."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - a counter, no event to wait on
            await asyncio.sleep(0.002)


class Endpoint(asyncio.DatagramProtocol):
    """A UDP socket on 127.0.0.1 that queues what it receives."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.received.put_nowait((data, addr))

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send(self, data: bytes, dest: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, dest)

    async def receive(self, wait: float = 1.0) -> tuple[bytes, Address]:
        async with asyncio.timeout(wait):
            return await self.received.get()

    async def expect_nothing(self, wait: float = 0.15) -> None:
        await asyncio.sleep(wait)
        assert self.received.empty(), f"unexpected datagram {self.received.get_nowait()!r}"

    def drain(self) -> list[tuple[bytes, Address]]:
        items = []
        while not self.received.empty():
            items.append(self.received.get_nowait())
        return items


@contextlib.asynccontextmanager
async def endpoint(port: int = 0) -> AsyncIterator[Endpoint]:
    """A loopback endpoint, closed on exit whatever happens."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Endpoint, local_addr=(HOST, port))
    try:
        yield protocol
    finally:
        transport.close()


@contextlib.asynccontextmanager
async def endpoint_pair() -> AsyncIterator[tuple[Endpoint, Endpoint]]:
    """An RTP endpoint and its RTCP endpoint on the next port (retrying until both bind)."""
    for _ in range(50):
        async with endpoint() as rtp:
            try:
                async with endpoint(rtp.address[1] + 1) as rtcp:
                    yield rtp, rtcp
                    return
            except OSError:
                continue
    raise RuntimeError("could not bind an RTP/RTCP port pair")
