"""rtpengine's ng control protocol: a cookie and a bencoded dict over UDP.

A request is ``COOKIE SPACE bencode(dict)``; the reply carries the same cookie. The message
functions are pure (``ng_request``, ``ng_reply``); ``NgClient`` is the asyncio adapter. A lost
datagram is sent again with the same cookie (rtpengine answers a repeated cookie from its reply
cache, so an ``offer`` sent twice allocates once), ``attempts`` times, each waiting ``timeout``
seconds; at most ``max_pending`` requests wait at once, so a dead rtpengine costs bounded memory
and each call's setup fails within ``attempts * timeout`` seconds (503).
"""

from __future__ import annotations

import asyncio
import secrets

from pbx.errors import PbxError
from pbx.media.bencode import BencodeError, Decoded, Value, decode, encode

Reply = dict[bytes, Decoded]


class NgError(PbxError):
    """rtpengine refused a request, did not answer, or answered something unreadable."""


def ng_request(cookie: bytes, command: dict[str, Value]) -> bytes:
    return cookie + b" " + encode(command)


def ng_reply(data: bytes) -> tuple[bytes, Reply]:
    """(cookie, reply dict) of a datagram; NgError if it is not a readable reply."""
    cookie, space, body = data.partition(b" ")
    if not space:
        raise NgError("ng reply without a cookie")
    try:
        reply = decode(body)
    except BencodeError as exc:
        raise NgError(f"unreadable ng reply: {exc}") from exc
    if not isinstance(reply, dict):
        raise NgError("ng reply is not a dictionary")
    return cookie, reply


def checked(reply: Reply) -> Reply:
    """The reply if its result is ok; NgError with rtpengine's reason otherwise."""
    result = reply.get(b"result")
    if result in (b"ok", b"pong"):
        return reply
    reason = reply.get(b"error-reason", result)
    text = reason.decode(errors="replace") if isinstance(reason, bytes) else repr(reason)
    raise NgError(f"rtpengine: {text}")


class NgClient(asyncio.DatagramProtocol):
    """Requests to one rtpengine over UDP (see the module docstring)."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        timeout: float = 0.5,
        attempts: int = 3,
        max_pending: int = 512,
    ) -> None:
        self.address = address
        self.timeout, self.attempts, self.max_pending = timeout, attempts, max_pending
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[bytes, asyncio.Future[Reply]] = {}

    async def connect(self) -> None:
        if self._transport is None:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                lambda: self, remote_addr=self.address
            )
            self._transport = transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def request(self, command: dict[str, Value]) -> Reply:
        """Send ``command``; its checked reply. NgError on refusal, timeout or overload."""
        if len(self._pending) >= self.max_pending:
            raise NgError("rtpengine: too many requests waiting")
        await self.connect()
        assert self._transport is not None
        cookie = secrets.token_hex(8).encode()
        datagram = ng_request(cookie, command)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[cookie] = future
        try:
            for _ in range(self.attempts):
                self._transport.sendto(datagram)
                try:
                    return checked(await asyncio.wait_for(asyncio.shield(future), self.timeout))
                except TimeoutError:
                    continue
            raise NgError(f"rtpengine at {self.address[0]}:{self.address[1]} did not answer")
        finally:
            del self._pending[cookie]
            future.cancel()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        try:
            cookie, reply = ng_reply(data)
        except NgError:
            return  # not an answer to anything we can name: the request times out
        future = self._pending.get(cookie)
        if future is not None and not future.done():
            future.set_result(reply)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable while rtpengine restarts: the retries cover it
