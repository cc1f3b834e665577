"""pbx.http.HttpListener: an ASGI app served by uvicorn inside the running loop.

Each test runs its own loop (``asyncio.run``, or ``uvloop.run`` as ``pbx run`` does) and binds
127.0.0.1:0.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from structlog.testing import capture_logs

from pbx.http import HttpListener

pytestmark = pytest.mark.integration

Runner = Callable[[Awaitable[Any]], Any]
RUNNERS = [pytest.param(asyncio.run, id="asyncio"), pytest.param(uvloop.run, id="uvloop")]


async def hello(request: Request) -> Response:
    return JSONResponse({"hello": request.url.path, "scheme": request.url.scheme})


async def fail(request: Request) -> Response:
    raise RuntimeError("boom")


APP = Starlette(routes=[Route("/hello", hello), Route("/fail", fail)])


def open_sockets() -> set[str]:
    """The process's open sockets, as ``socket:[inode]``."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the descriptor listdir itself used
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


def tasks_but_this() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


def refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("run", RUNNERS)
def test_listener_binds_port_zero_serves_and_closes_without_leaks(run: Runner) -> None:
    async def scenario() -> None:
        sockets, tasks = open_sockets(), tasks_but_this()
        listener = HttpListener(APP, "127.0.0.1", 0)
        port = await listener.start()
        assert port != 0
        assert listener.port == port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(3):  # one keep-alive connection, several requests
                response = await client.get("/hello")
                assert response.status_code == 200
                assert response.json() == {"hello": "/hello", "scheme": "http"}
            assert "server" not in response.headers
            await listener.close()
        await listener.close()  # a second close is harmless
        assert tasks_but_this() == tasks
        assert open_sockets() == sockets
        assert refused(port)

    run(scenario())


@pytest.mark.parametrize("run", RUNNERS)
def test_close_ends_idle_keep_alive_and_half_sent_requests(run: Runner) -> None:
    async def scenario() -> None:
        sockets = open_sockets()
        listener = HttpListener(APP, "127.0.0.1", 0)
        port = await listener.start()
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await idle_reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        half_reader, half_writer = await asyncio.open_connection("127.0.0.1", port)
        half_writer.write(b"GET /hello HTTP/1.1\r\nHo")
        await half_writer.drain()
        await asyncio.sleep(0.05)
        await asyncio.wait_for(listener.close(), 10)
        # Both connections were closed by the server: the clients read EOF.
        await asyncio.wait_for(idle_reader.read(), 5)
        assert await asyncio.wait_for(half_reader.read(), 5) == b""
        for writer in (idle_writer, half_writer):
            writer.close()
            await writer.wait_closed()
        assert open_sockets() == sockets

    run(scenario())


@pytest.mark.parametrize("run", RUNNERS)
def test_listener_leaves_the_loops_signal_handlers_alone(run: Runner) -> None:
    # uvicorn's own Server.serve() swaps SIGINT/SIGTERM handlers with signal.signal and raises
    # the signal again when it stops; pbx's loop.add_signal_handler handlers must survive that.
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[str] = asyncio.Queue()
        loop.add_signal_handler(signal.SIGTERM, got.put_nowait, "TERM")
        loop.add_signal_handler(signal.SIGHUP, got.put_nowait, "HUP")
        try:
            before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            listener = HttpListener(APP, "127.0.0.1", 0)
            port = await listener.start()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert (await client.get("/hello")).status_code == 200
                during = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
                assert during == before
                os.kill(os.getpid(), signal.SIGHUP)
                assert await asyncio.wait_for(got.get(), 5) == "HUP"
                os.kill(os.getpid(), signal.SIGTERM)
                assert await asyncio.wait_for(got.get(), 5) == "TERM"
                # The listener keeps serving: a signal is the process's business, not its.
                assert (await client.get("/hello")).status_code == 200
            await listener.close()
            after = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            assert after == before
            await asyncio.sleep(0.05)
            assert got.empty()  # nothing raised again on close
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            loop.remove_signal_handler(signal.SIGHUP)

    run(scenario())


def test_start_raises_oserror_when_the_port_is_taken() -> None:
    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            sockets, tasks = open_sockets(), tasks_but_this()
            listener = HttpListener(APP, "127.0.0.1", taken.getsockname()[1])
            with pytest.raises(OSError, match="in use"):
                await listener.start()
            await listener.close()
            assert tasks_but_this() == tasks
            assert open_sockets() == sockets

    uvloop.run(scenario())


def test_an_exception_in_the_app_is_logged_through_structlog() -> None:
    async def scenario() -> list[MutableMapping[str, Any]]:
        listener = HttpListener(APP, "127.0.0.1", 0)
        port = await listener.start()
        with capture_logs() as logs:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert (await client.get("/fail")).status_code == 500
            await listener.close()
        return logs

    logs = uvloop.run(scenario())
    errors = [entry for entry in logs if entry["event"] == "http_server_message"]
    assert errors
    assert errors[0]["log_level"] == "error"
    assert errors[0]["exc_info"][0] is RuntimeError


def test_tls_needs_both_certificate_and_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both"):
        HttpListener(APP, "127.0.0.1", 0, certificate=tmp_path / "cert.pem")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_listener_serves_https_with_a_certificate_and_key(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )

    async def scenario() -> None:
        listener = HttpListener(APP, "127.0.0.1", 0, certificate=cert, key=key)
        port = await listener.start()
        trust = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=trust) as client:
            response = await client.get("/hello")
            assert response.json() == {"hello": "/hello", "scheme": "https"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get("/hello")
        await listener.close()

    uvloop.run(scenario())


def test_a_bad_certificate_fails_start_without_leaks(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")

    async def scenario() -> None:
        sockets, tasks = open_sockets(), tasks_but_this()
        listener = HttpListener(APP, "127.0.0.1", 0, certificate=cert, key=key)
        with pytest.raises(ssl.SSLError):
            await listener.start()
        assert tasks_but_this() == tasks
        assert open_sockets() == sockets

    uvloop.run(scenario())
