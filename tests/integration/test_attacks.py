"""Issue 17: attacks from sources under the rate limit, against a real ``pbx run`` on loopback.

Each test reproduces one attack of the issue, bounded in count and time (a few seconds), from
addresses 127.0.0.3-127.0.0.9, and prints the figure it checks. The server is the subprocess of
``tests/integration/harness.py``; its memory and CPU are read from /proc.
"""

from __future__ import annotations

import itertools
import os
import resource
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import RunningServer, running_server, write_config

pytestmark = pytest.mark.integration

ATTACKERS = [f"127.0.0.{i}" for i in range(3, 10)]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = write_config(tmp_path_factory.mktemp("attacks"))
    with running_server(config) as running:
        yield running


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def message(
    method: str,
    source: str,
    *,
    branch: str,
    uri: str = "sip:1001@acme.example",
    extra: str = "",
    via: str | None = None,
) -> bytes:
    top = via if via is not None else f"SIP/2.0/UDP {source}:5099;branch={branch}"
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {top}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:1001@acme.example>;tag=a-{branch}\r\n"
        "To: <sip:1001@acme.example>\r\n"
        f"Call-ID: {branch}@{source}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:1001@{source}:5099>\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    ).encode("latin-1")


def udp_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


_settles = itertools.count()


def settle(server: RunningServer) -> None:
    """Return once the server has handled every datagram sent to it before: it reads its UDP
    socket in order, so the answer to an OPTIONS sent now comes after all of them. From the
    trunk's address, which the rate limit spares."""
    branch = f"z9hG4bK-settle-{next(_settles)}"
    with udp_socket("127.0.0.2") as sock:
        sock.settimeout(10.0)
        sock.sendto(message("OPTIONS", "127.0.0.2", branch=branch), server.udp)
        while branch.encode() not in sock.recv(65536):
            pass


def flood(
    server: RunningServer,
    sources: list[str],
    rate: float,
    seconds: float,
    make: Callable[[str, int], bytes],
) -> int:
    """Each source sends ``make(source, n)`` at ``rate`` per second for ``seconds``; returns
    the bytes sent. One thread per source, paced by the clock."""
    sent = [0] * len(sources)

    def run(index: int, source: str) -> None:
        with udp_socket(source) as sock:
            start = time.monotonic()
            n = 0
            while (elapsed := time.monotonic() - start) < seconds:
                if n < elapsed * rate:
                    data = make(source, n)
                    sock.sendto(data, server.udp)
                    sent[index] += len(data)
                    n += 1
                else:
                    time.sleep(0.002)

    threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(sources)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(sent)


def test_made_up_methods_do_not_grow_metrics(server: RunningServer) -> None:
    before = len(server.admin_request("GET", "/metrics")[1])
    flood(
        server,
        ATTACKERS[:3],
        40,
        2.5,
        lambda src, n: message(f"M{src[-1]}X{n}", src, branch=f"z9hG4bK-m{src}-{n}"),
    )
    settle(server)
    text = server.admin_request("GET", "/metrics")[1]
    series = [line for line in text.splitlines() if line.startswith("pbx_sip_messages_in_total")]
    print(f"/metrics {before} -> {len(text)} bytes; messages_in series: {len(series)}")
    assert len(series) <= 15
    assert len(text) - before < 2000


def test_big_messages_do_not_hold_memory(server: RunningServer) -> None:
    pid = server.process.pid
    contacts = ", ".join(f"<sip:{i}@h>" for i in range(4000))  # 55 KB, as in the issue
    base = rss_mb(pid)
    sent = flood(
        server,
        ATTACKERS[:3],
        40,
        3.0,
        lambda src, n: message(
            "OPTIONS", src, branch=f"z9hG4bK-big{src}-{n}", extra=f"Contact: {contacts}\r\n"
        ),
    )
    settle(server)
    growth = rss_mb(pid) - base
    print(f"RSS growth after {sent / 1e6:.1f} MB of 4000-Contact OPTIONS: {growth:.1f} MB")
    assert growth < 50


def test_a_phone_is_answered_fast_while_costly_messages_arrive(server: RunningServer) -> None:
    # About 1,300 Via values in 50 KB: 25-30 times the parse work of an ordinary message.
    vias = ",".join(f"SIP/2.0/UDP 10.0.0.{i % 250};branch=z9hG4bK{i}" for i in range(1300))
    attack = threading.Thread(
        target=flood,
        args=(
            server,
            ATTACKERS[3:6],
            50,
            4.0,
            lambda src, n: message(
                "OPTIONS",
                src,
                branch=f"x{n}",
                via=f"SIP/2.0/UDP {src}:5099;branch=z9hG4bK-v{src}-{n},{vias}",
            ),
        ),
    )
    attack.start()
    time.sleep(0.5)
    times: list[float] = []
    with udp_socket("127.0.0.9") as phone:
        phone.settimeout(1.0)
        for n in range(30):
            start = time.monotonic()
            phone.sendto(
                message("REGISTER", "127.0.0.9", branch=f"z9hG4bK-ok{n}", uri="sip:acme.example"),
                server.udp,
            )
            try:
                phone.recvfrom(65536)
                times.append(time.monotonic() - start)
            except TimeoutError:
                times.append(1.0)
            time.sleep(0.08)
    attack.join()
    p95 = statistics.quantiles(times, n=20)[-1]
    print(f"healthy phone REGISTER p95 {p95 * 1000:.0f} ms during the costly-message attack")
    assert p95 < 0.2


def test_an_invite_flood_leaves_nothing_to_retransmit(server: RunningServer) -> None:
    pid = server.process.pid
    sockets = [udp_socket(src) for src in ATTACKERS[:5]]
    try:
        start = time.monotonic()
        n = 0
        while (elapsed := time.monotonic() - start) < 2.0:  # 5 sources x 45 INVITEs/s, no ACK
            if n < elapsed * 45:
                for sock, src in zip(sockets, ATTACKERS, strict=False):
                    sock.sendto(
                        message(
                            "INVITE",
                            src,
                            branch=f"z9hG4bK-inv{src}-{n}",
                            uri="sip:0312345678@acme.example",
                        ),
                        server.udp,
                    )
                n += 1
            else:
                time.sleep(0.002)
        settle(server)  # every INVITE answered: the 401s are in the sockets' buffers
        flood_end = time.monotonic()
        for sock in sockets:
            sock.setblocking(False)
            while True:
                try:
                    sock.recv(65536)
                except BlockingIOError:
                    break
        cpu_start, measured_from = cpu_seconds(pid), time.monotonic()
        later = 0
        deadline = flood_end + 5.0
        for sock in sockets:
            sock.settimeout(max(0.01, (deadline - time.monotonic()) / len(sockets)))
            try:
                while time.monotonic() < deadline:
                    sock.recv(65536)
                    later += 1
            except TimeoutError:
                pass
        time.sleep(max(0.0, deadline - time.monotonic()))
        busy = (cpu_seconds(pid) - cpu_start) / (time.monotonic() - measured_from)
    finally:
        for sock in sockets:
            sock.close()
    print(f"{n * 5} INVITEs: 401s retransmitted after the flood: {later}; CPU {busy:.0%}")
    assert later == 0
    assert busy < 0.2


def test_malformed_messages_write_little_log(server: RunningServer) -> None:
    before = sum(len(str(line)) for line in list(server.log_lines))
    garbage = "@" + "x" * 3000
    sent = flood(
        server,
        ATTACKERS[4:7],
        45,
        2.0,
        lambda src, n: message("OPTIONS", src, branch=f"b{n}", via=garbage),
    )
    # Every line the flood caused has been written once the server answers the barrier, and
    # read by the harness once a line it writes after that has arrived.
    settle(server)
    reloads = len(server.events("config_reload_unchanged"))
    assert server.admin_request("POST", "/reload")[0] == 200
    assert len(server.wait_for_events("config_reload_unchanged", reloads + 1)) == reloads + 1
    logged = sum(len(str(line)) for line in list(server.log_lines)) - before
    print(f"log bytes per attack byte: {logged / sent:.4f} ({logged} of {sent})")
    assert logged / sent < 0.05


def test_idle_connections_do_not_lock_out_new_phones(tmp_path: Path) -> None:
    config = write_config(tmp_path, sip_extra="tcp_max_connections = 200")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    held: list[socket.socket] = []
    with running_server(config, nofile=256) as running:
        try:
            for source in ATTACKERS:  # 7 x 50 idle connections: over the cap and the fd limit
                for _ in range(50):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.bind((source, 0))
                    sock.settimeout(2)
                    try:
                        sock.connect(running.tcp)
                    except OSError:
                        sock.close()
                        continue
                    held.append(sock)
            time.sleep(0.5)
            options = message("OPTIONS", "127.0.0.2", branch="z9hG4bK-newphone").replace(
                b"SIP/2.0/UDP", b"SIP/2.0/TCP"
            )
            reply = b""
            with socket.create_connection(running.tcp, timeout=3) as phone:
                phone.sendall(options)
                try:
                    while b"\r\n\r\n" not in reply:
                        chunk = phone.recv(65536)
                        if not chunk:
                            break
                        reply += chunk
                except OSError:
                    pass
            admin, _ = running.admin_request("GET", "/status")
            limit = running.events("open_file_limit")
            print(
                f"{len(held)} idle connections; new phone got {reply[:12]!r}; admin {admin}; "
                f"open_file_limit {limit[0] if limit else None}"
            )
            assert reply.startswith(b"SIP/2.0 200")
            assert admin == 200
        finally:
            for sock in held:
                sock.close()
