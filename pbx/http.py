"""Serving an ASGI app (the admin API, later the control panel) inside the server's own loop.

uvicorn speaks HTTP/1.1 (RFC 9112, through h11) and runs as one more task of the running event
loop (uvloop in ``pbx run``): no thread, no second loop. The listening socket is bound here, so
port 0 works and the real port is known before the first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import structlog
import uvicorn
from starlette.types import ASGIApp

log = structlog.get_logger("pbx.http")

# A loopback admin API or control panel sees a handful of clients: past this many open
# connections (or requests in progress) uvicorn answers 503 instead of queueing.
LIMIT_CONCURRENCY = 64
KEEP_ALIVE_SECONDS = 5
# How long close() lets requests in progress finish before their tasks are cancelled.
SHUTDOWN_SECONDS = 5
BACKLOG = 128


class _LoopServer(uvicorn.Server):
    """uvicorn's server without its signal handling, and with a "started" event.

    ``uvicorn.Server.serve`` replaces the SIGINT/SIGTERM handlers with ``signal.signal`` and
    raises the signal again once it has stopped. In pbx the process's loop owns those signals
    (``loop.add_signal_handler`` in ``pbx.server.serve``: drain, then stop), so this server
    leaves them alone and stops only when ``HttpListener.close`` asks.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class _StructlogHandler(logging.Handler):
    """Hands uvicorn's warnings and errors (an exception in the app, a protocol error) to
    structlog, so they come out as the process's JSON log lines."""

    def emit(self, record: logging.LogRecord) -> None:
        log.log(
            record.levelno,
            "http_server_message",
            logger_name=record.name,
            message=record.getMessage(),
            exc_info=record.exc_info or False,
        )


def _route_uvicorn_logs() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(h, _StructlogHandler) for h in logger.handlers):
        logger.addHandler(_StructlogHandler(logging.WARNING))


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``(host, port)``; port 0 picks a free one."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HttpListener:
    """Serves one ASGI app on ``(host, port)``, optionally over TLS, in the running loop."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        certificate: Path | None = None,
        key: Path | None = None,
        name: str = "http",
        limit_concurrency: int = LIMIT_CONCURRENCY,
        keep_alive_seconds: int = KEEP_ALIVE_SECONDS,
        proxy_headers: bool = False,
    ) -> None:
        if (certificate is None) != (key is None):
            raise ValueError("TLS needs both a certificate and a key")
        self.app = app
        self.host = host
        self.port = port
        self.certificate = certificate
        self.key = key
        self.name = name
        self.limit_concurrency = limit_concurrency
        self.keep_alive_seconds = keep_alive_seconds
        self.proxy_headers = proxy_headers
        self._server: _LoopServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def tls(self) -> bool:
        return self.certificate is not None

    async def start(self) -> int:
        """Bind, start serving, and return the bound port. Raises ``OSError`` if it can't bind."""
        if self._task is not None:
            raise RuntimeError(f"{self.name} listener already started")
        _route_uvicorn_logs()
        config = uvicorn.Config(
            self.app,
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=self.proxy_headers,
            server_header=False,
            limit_concurrency=self.limit_concurrency,
            timeout_keep_alive=self.keep_alive_seconds,
            timeout_graceful_shutdown=SHUTDOWN_SECONDS,
            backlog=BACKLOG,
            ssl_certfile=str(self.certificate) if self.certificate else None,
            ssl_keyfile=str(self.key) if self.key else None,
        )
        sock = _bind(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        server = _LoopServer(config)
        task = asyncio.get_running_loop().create_task(
            server.serve(sockets=[sock]), name=f"pbx-{self.name}-http"
        )
        ready = asyncio.ensure_future(server.ready.wait())
        try:
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled while starting: leave nothing behind
            task.cancel()
            sock.close()
            raise
        finally:
            ready.cancel()
            await asyncio.wait({ready})
        if not server.ready.is_set():
            # Startup failed (a bad certificate, say): serve() has ended; raise what it raised.
            sock.close()
            task.result()
            raise RuntimeError(f"{self.name} listener stopped while starting")
        self._server, self._task = server, task
        task.add_done_callback(self._on_done)
        log.info(
            "http_listener_started",
            listener=self.name,
            host=self.host,
            port=self.port,
            tls=self.tls,
        )
        return self.port

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("http_listener_failed", listener=self.name, exc_info=task.exception())

    async def close(self) -> None:
        """Stop accepting, let requests in progress finish (bounded), close every connection."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        self._server = self._task = None
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
        # After the graceful time-out uvicorn cancels the requests' tasks but may leave their
        # connections open: close what is left so no socket outlives the listener.
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()
        log.info("http_listener_stopped", listener=self.name)
