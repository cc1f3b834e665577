"""Keep-alive load: server CPU for the OPTIONS checks of 10,000 registered phones (issue 15).

The phones are simulated: their bindings are written into the server's database before it
starts (sources spread over ``--sockets`` UDP sockets on loopback, each standing for
``phones / sockets`` phones with contacts of their own), and a small asyncio responder answers
every OPTIONS on those sockets with 200, as a phone would. The server runs as ``pbx run``.

Measured in one run, from /proc/<pid>/stat (user + system CPU of the server process):
1. idle baseline: the same bindings with keep-alive checks off (``qualify_seconds = 0``);
2. keep-alives on with the default interval, after a reload (``POST /reload``): loaded bindings
   keep their hash phase, so probes are spread over the interval from the start.
Each window lasts ``--seconds`` (default: one interval). Prints CPU seconds per minute and % of
one core for both, and the probes sent and answered.

    PYTHONPATH=. .venv/bin/python -m loadtests.bench_keepalive [--phones 10000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from pbx.config.model import DEFAULT_QUALIFY_SECONDS, Extension, TenantId
from pbx.registrar import Binding
from pbx.sip.message import SipUri
from pbx.store import Store
from tests.integration.harness import running_server, write_config

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


PER_TENANT = 5_000  # extensions are 0000-8999: the phones are split over tenants t0, t1, ...


def tenant_files(phones: int, qualify: int) -> dict[str, str]:
    files = {}
    for t in range((phones + PER_TENANT - 1) // PER_TENANT):
        count = min(PER_TENANT, phones - t * PER_TENANT)
        users = "".join(
            f'[[users]]\nextension = "{1000 + n:04d}"\npassword = "pw{n}"\n' for n in range(count)
        )
        default = "default = true\n" if t == 0 else ""
        files[f"t{t}"] = (
            f'[tenant]\ndomain = "t{t}.example"\n{default}qualify_seconds = {qualify}\n'
            f"[limits]\nmax_users = {count}\n" + users
        )
    return files


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Responder(asyncio.DatagramProtocol):
    """Answers every OPTIONS with 200 OK (Via, From, To, Call-ID, CSeq echoed)."""

    answered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if not data.startswith(b"OPTIONS "):
            return
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        keep = [
            line
            for line in head[1:]
            if line.split(b":", 1)[0].lower() in (b"via", b"from", b"to", b"call-id", b"cseq")
        ]
        reply = b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n"
        self.transport.sendto(reply, addr)
        Responder.answered += 1


async def seed(data_dir: Path, ports: list[int], phones: int) -> None:
    store = await Store.open(data_dir / "pbx.sqlite3")
    now = time.time()
    bindings = []
    for n in range(phones):
        port = ports[n % len(ports)]
        ext = f"{1000 + n % PER_TENANT:04d}"
        bindings.append(
            Binding(
                tenant=TenantId(f"t{n // PER_TENANT}"),
                extension=Extension(ext),
                uri=SipUri("sip", "127.0.0.1", user=f"{ext}-{n}", port=port),
                source_host="127.0.0.1",
                source_port=port,
                transport="UDP",
                connection_id=None,
                call_id=f"bench-{n}",
                cseq=1,
                registered_at=now,
                expires_at=now + 3600,
            )
        )
    await store.apply_bindings(bindings, ())
    await store.close()


async def measure(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    sockets = []
    for _ in range(args.sockets):
        transport, _ = await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", 0))
        sockets.append(transport)
    ports = [t.get_extra_info("sockname")[1] for t in sockets]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pbx"
        # All simulated phones share 127.0.0.1: lift the per-source rate limit (50/s), which
        # would otherwise drop their answers (real phones have addresses of their own).
        extra = "[security]\nmax_requests_per_second = 1000000\n"
        config = write_config(root, tenants=tenant_files(args.phones, 0), server_extra=extra)
        await seed(root / "data", ports, args.phones)
        with running_server(config) as server:
            pid = server.process.pid
            await asyncio.sleep(3)  # start-up settles
            before = cpu_seconds(pid)
            await asyncio.sleep(args.seconds)
            idle = cpu_seconds(pid) - before
            for name, text in tenant_files(args.phones, DEFAULT_QUALIFY_SECONDS).items():
                (root / "tenants" / f"{name}.toml").write_text(text, encoding="utf-8")
            status, body = await loop.run_in_executor(None, server.admin_request, "POST", "/reload")
            assert status == 200, body
            await asyncio.sleep(2)
            answered = Responder.answered
            before = cpu_seconds(pid)
            await asyncio.sleep(args.seconds)
            busy = cpu_seconds(pid) - before
            answered = Responder.answered - answered
            probes = server.metrics().get("pbx_keepalive_probes_total", 0.0)
            unreachable = server.metrics().get("pbx_registrations_unreachable", 0.0)
    for t in sockets:
        t.close()
    per_minute = 60.0 / args.seconds
    out = sys.stdout
    out.write(
        f"phones {args.phones}, interval {DEFAULT_QUALIFY_SECONDS} s, "
        f"window {args.seconds:g} s, {args.sockets} responder sockets\n"
    )
    out.write(
        f"idle baseline (checks off): {idle * per_minute:.2f} CPU s/min "
        f"({100 * idle / args.seconds:.1f} % of one core)\n"
    )
    out.write(
        f"keep-alives on:             {busy * per_minute:.2f} CPU s/min "
        f"({100 * busy / args.seconds:.1f} % of one core)\n"
    )
    out.write(
        f"keep-alives alone:          {(busy - idle) * per_minute:.2f} CPU s/min "
        f"({100 * (busy - idle) / args.seconds:.1f} % of one core); "
        f"OPTIONS answered in the window {answered} ({answered / args.seconds:.0f}/s), "
        f"probes sent in all {probes:.0f}, contacts unreachable {unreachable:.0f}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phones", type=int, default=10_000)
    parser.add_argument("--sockets", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=float(DEFAULT_QUALIFY_SECONDS))
    args = parser.parse_args()
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
