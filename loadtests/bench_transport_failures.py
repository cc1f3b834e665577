"""What a TCP failure costs the server while it is busy: a closed phone connection, a failed send.

A busy server holds tens of thousands of live transactions (about 64,000 at 500 calls/s:
timers J, K, L, M keep them 32 s) and thousands of registered phones. A TCP failure must find
what it concerns:
- a phone's TCP connection closes: the bindings registered over it go offline;
- a send to a TCP peer fails (a trunk or a phone refusing connections): the transactions to
  that peer fail at once (RFC 3261 17.1.4) and the TCP bindings at that address go offline.

This benchmark builds the service in process (fake transport and clock, as the tests do; no
sockets), fills it with ``--bindings`` registrations (half over TCP, each with its own
connection) and ``--transactions`` live UDP server transactions, then times
``--failures`` connection closures and ``--failures`` failed sends (each of a peer with one
live transaction and one binding). It also times ``--failures`` new TCP connections at the
connection cap (``--bindings`` connections, all but the newest ten trusted: a phone
authenticated over them), each of which evicts the oldest untrusted one, as a flood of idle
connections from an attacker does. One core, pure Python: the figure is the adapter's own
work per failure.

    PYTHONPATH=. .venv/bin/python -m loadtests.bench_transport_failures [--before REV]

``--before REV`` runs this same script against a worktree of REV, first, and prints both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtests.before import checkout, describe

TRUNK = ("127.0.0.2", 5060)


def _request(n: int, method: str = "OPTIONS") -> bytes:
    return (
        f"{method} sip:pbx.example SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {TRUNK[0]}:{TRUNK[1]};branch=z9hG4bK-live-{n}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:trunk@pbx.example>;tag=t\r\n"
        "To: <sip:pbx.example>\r\n"
        f"Call-ID: live-{n}\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def measure(bindings: int, transactions: int, failures: int) -> dict[str, float]:
    """Microseconds per connection closure and per failed send, by figure name."""
    # Imported here: with --before the same names come from the other commit's worktree.
    from pbx.clock import FakeClock
    from pbx.config.holder import ConfigHolder
    from pbx.config.load import load_config
    from pbx.config.model import Extension, TenantId
    from pbx.metrics import Registry
    from pbx.registrar import Binding, Registrations
    from pbx.service import SipService
    from pbx.sip.build import build_response
    from pbx.sip.message import SipRequest, SipUri
    from pbx.sip.parse import parse_message
    from pbx.sip.transaction import RequestReceived
    from pbx.store import Store
    from tests.integration.harness import write_config
    from tests.test_service import FakeTransport

    # Built here rather than with ``tests.test_service.running_service``: with --before, the
    # other commit's tests are imported, and older ones have no such helper.
    with tempfile.TemporaryDirectory(prefix="pbx-bench-failures-") as tmp:
        snapshot = load_config(write_config(Path(tmp) / "pbx"))
        store = await Store.open_in(snapshot.server.storage.data_dir)
        clock = FakeClock()
        svc = SipService(ConfigHolder(snapshot), store, Registry(), clock)
        fake = FakeTransport()
        svc.attach(fake)  # type: ignore[arg-type]
        await svc.start()
        try:
            tenant = TenantId("acme")

            def binding(n: int, tcp: bool) -> Binding:
                host = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
                return Binding(
                    tenant, Extension(f"{n:05d}"), SipUri("sip", host, f"{n:05d}", port=5060),
                    host, 40000, "TCP" if tcp else "UDP", f"c{n}" if tcp else None,
                    f"reg-{n}", 1, 0.0, 1e12,
                )  # fmt: skip

            svc.registrations = Registrations(binding(n, n % 2 == 1) for n in range(bindings))
            # Live transactions: answered requests of the trunk, lingering for timer J.
            for n in range(transactions):
                request = parse_message(_request(n))
                assert isinstance(request, SipRequest)
                [event] = svc.table.receive(request, TRUNK, clock.monotonic())
                assert isinstance(event, RequestReceived)
                svc.table.respond(event.key, build_response(request, 200, to_tag="x"), 0.0)
            fake.sent.clear()
            live = len(svc.table)

            closures = [f"c{n}" for n in range(1, 2 * failures, 2)]
            started = time.perf_counter()
            for connection in closures:
                svc._on_connection_closed(connection)  # type: ignore[arg-type]
            closed = (time.perf_counter() - started) / len(closures)
            assert len(svc.registrations.unreachable) == len(closures)

            # Peers with one live reliable transaction and one TCP binding each.
            peers = []
            for n in range(failures):
                host = f"127.1.{n // 256}.{n % 256}"
                peer = (host, 5060)
                at_peer = Binding(
                    tenant, Extension(f"p{n:05d}"), SipUri("sip", host, "p", port=5060), host, 5060,
                    "TCP", f"p{n}", f"reg-p{n}", 1, 0.0, 1e12,
                )  # fmt: skip
                svc.registrations.replace_aor(tenant, at_peer.extension, [at_peer])
                request = parse_message(_request(transactions + n, "MESSAGE"))
                assert isinstance(request, SipRequest)
                svc.send_request(request, peer, lambda *_: None, reliable=True)
                peers.append(peer)
            started = time.perf_counter()
            for peer in peers:
                svc._on_send_failed(peer)
            failed = (time.perf_counter() - started) / len(peers)
            assert len(svc.table) == live, "each failed send ended its transaction"
            assert len(svc.registrations.unreachable) == len(closures) + len(peers)
            return {
                "live transactions": float(live),
                "bindings": float(len(svc.registrations)),
                "connection closed (µs)": closed * 1e6,
                "send failed (µs)": failed * 1e6,
                "new connection at the cap (µs)": _newcomer_seconds(bindings, failures) * 1e6,
            }
        finally:
            await svc.stop()
            await store.close()


def _newcomer_seconds(connections: int, newcomers: int) -> float:
    """Seconds per TCP connection admitted at the connection cap (``connections``), where all
    but the newest few are phones' trusted connections: each newcomer evicts the oldest
    untrusted one (an attacker's flood of idle connections)."""
    from pbx.sip.transport import SipTransport, TcpLimits, _TcpConnection

    transport = SipTransport(lambda _: None, TcpLimits(max_connections=connections))
    local = ("127.0.0.1", 5060)

    def connect(n: int) -> _TcpConnection:
        conn = _TcpConnection(transport, local)
        conn.peer = (f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}", 40000)
        assert transport._admit(conn)
        return conn

    for n in range(connections - 10):
        transport.trust(connect(n).id)
    for n in range(connections - 10, connections):
        connect(n)
    started = time.perf_counter()
    for n in range(connections, connections + newcomers):
        connect(n)
    seconds = (time.perf_counter() - started) / newcomers
    assert transport.evicted == newcomers
    assert transport.tcp_connection_count == connections
    return seconds


def _before(rev: str, argv: list[str]) -> dict[str, float]:
    """``measure`` run by this script against a temporary worktree of ``rev``."""
    with checkout(rev) as tree:
        code = (
            f"import runpy, sys; sys.argv = ['bench', '--json', *{argv!r}]; "
            f"runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')"
        )
        env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{Path(__file__).parents[1]}"}
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=tree, env=env, check=True, capture_output=True
        )
    figures: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bindings", type=int, default=10_000)
    ap.add_argument("--transactions", type=int, default=64_000)
    ap.add_argument("--failures", type=int, default=200)
    ap.add_argument("--before", metavar="REV", help="also measure this commit (a worktree)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = ap.parse_args(argv)
    # Here, not in ``measure``: the test suite calls that, and logging is the process's.
    from pbx.log import configure_logging

    configure_logging("warning")
    sizes = ["--bindings", str(args.bindings), "--transactions", str(args.transactions)]
    sizes += ["--failures", str(args.failures)]
    if args.json:
        print(json.dumps(asyncio.run(measure(args.bindings, args.transactions, args.failures))))
        return 0
    before: dict[str, Any] | None = _before(args.before, sizes) if args.before else None
    after = asyncio.run(measure(args.bindings, args.transactions, args.failures))
    print(f"python {sys.version.split()[0]}, one core, in process (fake transport and clock)")
    if before is not None:
        print(f"before: {describe(args.before)}")
    for name, value in after.items():
        line = f"{name:<32} {value:12,.1f}"
        if before is not None and name in before:
            old = before[name]
            line += f"   before {old:12,.1f}"
            if "µs" in name and value:
                line += f"   x{old / value:,.0f} faster"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
