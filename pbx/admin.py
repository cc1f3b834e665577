"""The admin HTTP API (docs/design.md, "Command line and admin API").

A deliberately small HTTP/1.1 server on ``[admin] listen`` (loopback by default): ``POST /reload``,
``GET /status``, ``GET /registrations``, ``GET /calls`` (JSON) and ``GET /metrics`` (Prometheus
text format). One request per connection; request line and headers are capped at 16 KiB, bodies
at 64 KiB, and a client gets 10 seconds to send its request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("pbx.admin")

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
REQUEST_SECONDS = 10.0

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    500: "Internal Server Error",
}


@dataclass(frozen=True, slots=True)
class AdminResponse:
    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, value: Any, status: int = 200) -> AdminResponse:
        text = json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n"
        return cls(status, text.encode())


Handler = Callable[[], Awaitable[AdminResponse]]


class AdminServer:
    """Routes ``(method, path)`` to coroutine handlers; everything else is 404/405."""

    def __init__(self, routes: dict[tuple[str, str], Handler]) -> None:
        self.routes = routes
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            response = await asyncio.wait_for(self._handle(reader), REQUEST_SECONDS)
        except TimeoutError:
            response = AdminResponse.json({"error": "request timed out"}, 400)
        except Exception:  # the API boundary: one bad request never stops the server
            log.exception("admin_request_failed")
            response = AdminResponse.json({"error": "internal error"}, 500)
        head = (
            f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Error')}\r\n"
            f"Content-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        try:
            writer.write(head.encode() + response.body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader) -> AdminResponse:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return AdminResponse.json({"error": "request head too large"}, 413)
        except asyncio.IncompleteReadError:
            return AdminResponse.json({"error": "incomplete request"}, 400)
        if len(head) > MAX_HEAD:
            return AdminResponse.json({"error": "request head too large"}, 413)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return AdminResponse.json({"error": "malformed request line"}, 400)
        method, target = parts[0], parts[1].split("?", 1)[0]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                if not value.strip().isdigit():
                    return AdminResponse.json({"error": "bad Content-Length"}, 400)
                length = int(value.strip())
        if length > MAX_BODY:
            return AdminResponse.json({"error": "body too large"}, 413)
        if length:
            await reader.readexactly(length)
        handler = self.routes.get((method, target))
        if handler is None:
            allowed = sorted(m for (m, p) in self.routes if p == target)
            if allowed:
                return AdminResponse.json({"error": f"use {', '.join(allowed)}"}, 405)
            return AdminResponse.json({"error": f"no such endpoint: {target}"}, 404)
        return await handler()
