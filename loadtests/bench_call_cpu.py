"""CPU per call of the server, measured so that machine load does not change the figure.

    python -m loadtests.bench_call_cpu [--calls 1200] [--base 200] [--concurrency N]
                                       [--callgrind] [--repeat 5]

Loopback only, signalling only, the same tenant and calls as ``bench_calls`` (its ``TENANT``,
keep-alives off; the carrier on 127.0.0.2
calls 0312345678, whose rule rings extension 1001; the phone on 127.0.0.1, registered with
digest, rings and answers at once and waits for the BYE; the carrier ACKs and hangs up at once).
Both sides are one closed-loop driver in this process: ``--concurrency`` calls are in flight,
each next call starts when one ends, so the server runs as fast as it can and never
retransmits (the retransmissions seen are printed and must be 0 for a clean figure). The
server is ``pbx run`` with its normal JSON logging at info level (to a file), as in
``bench_calls``.

- ``--callgrind``: the server runs under ``valgrind --tool=callgrind`` twice on a fresh data
  directory (4 calls in flight by default, so that the slowed-down server answers before any
  retransmission timer fires), once for ``--base`` calls and once for ``--calls`` calls; each
  run waits ``--settle`` seconds after the last call (so the 32 s transaction and dialog
  clean-ups run) and stops the server (SIGTERM). It prints the instructions per call:
  (Ir(calls) - Ir(base)) / (calls - base). Start-up, registration, shutdown cancel out.
  Expect about 10 minutes; with ``--before REV`` the same for that commit first (an
  instruction count does not depend on the machine's load: the A/B to trust on a shared
  machine).
- ``--before REV``: two servers, one of the commit REV (a temporary git worktree) and one of
  this checkout, each warmed up with ``--base`` calls; then ``--repeat`` rounds alternating
  between them; prints both CPU figures per call and their ratio (the same minutes of a shared
  machine for both).
- Otherwise: one server, ``--base`` warm-up calls, then ``--repeat`` rounds of ``--calls``
  calls, each timed with the server's CPU time (utime + stime from /proc, 10 ms ticks); it
  prints the minimum and the median CPU µs per call. ``--profile FILE`` runs the server under
  cProfile (``python -m pstats FILE``; the figures are then cProfile's, not the server's);
  ``--spy FILE`` samples it with py-spy (500 Hz, raw stacks to FILE) and prints the functions
  with the most samples, by their own time and with what they call (``loadtests.profile_top``).
- The timed rounds last seconds, while a call's transactions linger 32 s and are cleaned up
  then (timers J, L, M): after the default warm-up the rounds measure calls without their
  clean-up. ``--base 30000`` (about 30 s of calls first) makes them hold the clean-up of the
  warm-up's calls, as in the steady state (docs/design.md 9.11); callgrind runs wait
  ``--settle`` seconds after the last call for the same reason.

The driver uses only the public face of the server (its command line and SIP), so it runs
unchanged on older commits (copy it there) for an A/B figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from loadtests import profile_top
from loadtests.before import checkout, describe
from loadtests.bench_calls import (
    CARRIER_IP,
    NUMBER,
    PHONE_IP,
    RTP_PORTS,
    RTP_PORTS_BEFORE,
    SERVER_EXTRA,
    TENANT,
)
from loadtests.bench_register import thread_cpu
from tests.integration.harness import free_port, write_config
from tests.integration.sip_client import SipUdpClient

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# --- the server -------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    udp: tuple[str, int]
    log: Path


def start_server(
    root: Path, prefix: list[str], profile: str | None = None, source: Path | None = None
) -> Server:
    config = write_config(
        root,
        tenants={"acme": TENANT},
        server_extra=SERVER_EXTRA,
        trunk=f"{CARRIER_IP}:{free_port(host=CARRIER_IP)}",
        listen='["udp:127.0.0.1:0"]',
        rtp_ports=RTP_PORTS_BEFORE if source is not None else RTP_PORTS,
    )
    log = root / "server.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                *(["-m", "cProfile", "-o", profile] if profile else []),
                "-m",
                "pbx",
                "run",
                "--config",
                str(config),
                "--log-json",
            ],
            cwd=source or REPO,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                **({"PYTHONPATH": str(source)} if source else {}),
            },
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server ended: {log.read_text()[-2000:]}")
        for line in log.read_text(errors="replace").splitlines():
            if '"server_started"' in line:
                info = json.loads(line)
                entry = next(e for e in info["sip"] if e["transport"] == "UDP")
                return Server(process, (entry["host"], int(entry["port"])), log)
        time.sleep(0.2)
    stop(process)
    raise RuntimeError("server did not start")


def stop(process: subprocess.Popen[bytes], timeout: float = 600.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def python_pid(process: subprocess.Popen[bytes], spied: bool) -> int:
    """The server's process id: the Python process itself, or its child under py-spy."""
    if not spied:
        return process.pid
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    found = children.read_text().split() if children.exists() else []
    return int(found[0]) if found else process.pid


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# --- the two user agents ----------------------------------------------------------------------


def header(head: list[str], name: str) -> list[str]:
    prefix = name.lower() + ":"
    return [line for line in head if line.lower().startswith(prefix)]


def value(line: str) -> str:
    return line.split(":", 1)[1].strip()


@dataclass
class CallState:
    number: int
    call_id: str
    from_tag: str
    acked: bool = False


@dataclass
class Driver:
    """Carrier (UAC) and phone (UAS) of ``bench_calls``' scenarios, closed loop."""

    server: tuple[str, int]
    carrier: socket.socket
    phone: socket.socket
    run_id: str
    started: int = 0
    done: int = 0
    retransmissions: int = 0
    calls: dict[str, CallState] = field(default_factory=dict)
    answered: dict[str, bytes] = field(default_factory=dict)  # the phone's 200 per Call-ID

    def start_call(self) -> None:
        self.started += 1
        n = self.started
        call_id = f"{self.run_id}-{n}@{CARRIER_IP}"
        call = CallState(n, call_id, f"c{n}")
        self.calls[call_id] = call
        port = self.carrier.getsockname()[1]
        invite = (
            f"INVITE sip:{NUMBER}@{self.server[0]}:{self.server[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {CARRIER_IP}:{port};branch=z9hG4bK-{self.run_id}-{n}-1\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:0901112222@{CARRIER_IP}:{port}>;tag={call.from_tag}\r\n"
            f"To: <sip:{NUMBER}@{self.server[0]}:{self.server[1]}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:0901112222@{CARRIER_IP}:{port};transport=UDP>\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        self.carrier.sendto(invite.encode(), self.server)

    def on_carrier(self, data: bytes) -> None:
        head = data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        call_id = value(header(head, "Call-ID")[0])
        method = value(header(head, "CSeq")[0]).split()[1]
        call = self.calls.get(call_id)
        if call is None:
            self.retransmissions += 1
            return
        if method == "INVITE" and status == 200:
            if call.acked:
                self.retransmissions += 1
            call.acked = True
            self.ack_and_bye(call, head)
        elif method == "BYE" and status == 200:
            del self.calls[call_id]
            self.done += 1
        elif status >= 300:
            raise RuntimeError(f"call {call_id} failed: {head[0]}")

    def ack_and_bye(self, call: CallState, head: list[str]) -> None:
        to = header(head, "To")[0]
        target = re.search(r"<([^>]+)>", value(header(head, "Contact")[0]))
        uri = target.group(1) if target else f"sip:{self.server[0]}:{self.server[1]}"
        routes = [value(line) for line in header(head, "Record-Route")]
        route = "".join(f"Route: {r}\r\n" for r in routes)
        port = self.carrier.getsockname()[1]
        for cseq, method, branch in ((1, "ACK", 2), (2, "BYE", 3)):
            request = (
                f"{method} {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {CARRIER_IP}:{port};"
                f"branch=z9hG4bK-{self.run_id}-{call.number}-{branch}\r\n"
                f"{route}Max-Forwards: 70\r\n"
                f"From: <sip:0901112222@{CARRIER_IP}:{port}>;tag={call.from_tag}\r\n"
                f"{to}\r\nCall-ID: {call.call_id}\r\nCSeq: {cseq} {method}\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            self.carrier.sendto(request.encode(), self.server)

    def on_phone(self, data: bytes, source: tuple[str, int]) -> None:
        head = data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        method = head[0].split(" ", 1)[0]
        if method == "ACK" or head[0].startswith("SIP/2.0"):
            return
        call_id = value(header(head, "Call-ID")[0])
        port = self.phone.getsockname()[1]
        common = [
            *header(head, "Via"),
            *header(head, "From"),
        ]
        rest = [*header(head, "Call-ID"), *header(head, "CSeq")]
        if method == "INVITE":
            if call_id in self.answered:
                self.retransmissions += 1
                self.phone.sendto(self.answered[call_id], source)
                return
            to = f"{header(head, 'To')[0]};tag=p{call_id.split('@')[0]}"
            extra = [
                *header(head, "Record-Route"),
                f"Contact: <sip:1001@{PHONE_IP}:{port};transport=UDP>",
            ]
            for status in ("180 Ringing", "200 OK"):
                lines = [f"SIP/2.0 {status}", *common, to, *rest, *extra, "Content-Length: 0"]
                response = ("\r\n".join(lines) + "\r\n\r\n").encode()
                self.phone.sendto(response, source)
            self.answered[call_id] = response
        elif method == "BYE":
            self.answered.pop(call_id, None)
            lines = ["SIP/2.0 200 OK", *common, *header(head, "To"), *rest, "Content-Length: 0"]
            self.phone.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), source)
        else:
            raise RuntimeError(f"phone got {head[0]}")

    def run(self, count: int, concurrency: int, timeout: float) -> None:
        """``count`` calls, ``concurrency`` at a time; returns when all have ended."""
        target = self.done + count
        first = self.started
        selector = selectors.DefaultSelector()
        selector.register(self.carrier, selectors.EVENT_READ, "carrier")
        selector.register(self.phone, selectors.EVENT_READ, "phone")
        try:
            while self.started < min(first + concurrency, first + count):
                self.start_call()
            deadline = time.monotonic() + timeout
            while self.done < target:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"stuck: {self.done}/{target}, {len(self.calls)} open")
                for key, _ in selector.select(1.0):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    while True:
                        try:
                            data, source = sock.recvfrom(65536)
                        except BlockingIOError:
                            break
                        if key.data == "carrier":
                            before = self.done
                            self.on_carrier(data)
                            for _ in range(self.done - before):
                                if self.started < first + count:
                                    self.start_call()
                        else:
                            self.on_phone(data, source)
        finally:
            selector.close()


def prepare(
    root: Path,
    prefix: list[str],
    run_id: str,
    profile: str | None = None,
    source: Path | None = None,
) -> tuple[Server, Driver]:
    server = start_server(root, prefix, profile, source)
    phone = SipUdpClient(server.udp, "1001", "secret1001", "acme.example", host=PHONE_IP)
    phone.sock.settimeout(600)
    reply = phone.register()
    if reply.status != 200:
        stop(server.process)
        raise RuntimeError(f"registration: {reply.status}")
    phone.sock.setblocking(False)
    carrier = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    carrier.bind((CARRIER_IP, 0))
    carrier.setblocking(False)
    return server, Driver(server.udp, carrier, phone.sock, run_id)


# --- the two measurements ---------------------------------------------------------------------


def callgrind_run(
    workdir: Path, calls: int, args: argparse.Namespace, source: Path | None = None
) -> tuple[int, int]:
    label = "before" if source is not None else "now"
    root = workdir / f"cg-{label}-{calls}"
    root.mkdir()
    out = root / "callgrind.out"
    prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    server, driver = prepare(root, prefix, f"cg{label}{calls}", source=source)
    try:
        driver.run(calls, args.concurrency, timeout=3600)
        time.sleep(args.settle)
    finally:
        stop(server.process)
        driver.carrier.close()
        driver.phone.close()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(out, args.keep / f"callgrind.out.{calls}")
    text = out.read_text(errors="replace")
    found = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.MULTILINE)
    if found is None:
        raise RuntimeError("no instruction total in the callgrind output")
    return int(found.group(1)), driver.retransmissions


def measure_callgrind(workdir: Path, args: argparse.Namespace) -> None:
    """Instructions per call of this checkout, and with ``--before`` of that commit too
    (machine load does not change an instruction count: the A/B for a shared machine)."""
    with contextlib.ExitStack() as stack:
        sources: list[tuple[str, Path | None]] = [("now", None)]
        if args.before:
            sources.insert(0, ("before", stack.enter_context(checkout(args.before))))
        figures = {}
        for label, source in sources:
            small, r_small = callgrind_run(workdir, args.base, args, source)
            print(f"{label:>6} {args.base:>6} calls: {small:>16,} instructions ({r_small} retr.)")
            big, r_big = callgrind_run(workdir, args.calls, args, source)
            print(f"{label:>6} {args.calls:>6} calls: {big:>16,} instructions ({r_big} retr.)")
            figures[label] = (big - small) / (args.calls - args.base)
            print(f"{label:>6} instructions per call: {figures[label]:,.0f}", flush=True)
            if r_small or r_big:
                print("retransmissions seen: the figure includes them (try a lower --concurrency)")
    if args.before:
        print(f"before = {describe(args.before)}")
        print(f"now/before {figures['now'] / figures['before']:.2f}")


def measure_cpu(workdir: Path, args: argparse.Namespace) -> None:
    prefix = []
    if args.spy is not None:
        prefix = ["py-spy", "record", "--format", "raw", "--rate", "500", "-o", str(args.spy), "--"]
    server, driver = prepare(workdir, prefix, "cpu", args.profile)
    try:
        driver.run(args.base, args.concurrency, timeout=300)
        pid = python_pid(server.process, args.spy is not None)
        figures = []
        for _ in range(args.repeat):
            before = cpu_seconds(pid)
            driver.run(args.calls, args.concurrency, timeout=300)
            after = cpu_seconds(pid)
            figures.append(1e6 * (after - before) / args.calls)
            print(f"round: {figures[-1]:.0f} µs/call", flush=True)
        threads = thread_cpu(pid)
    finally:
        if server.process.poll() is None and args.spy is not None:
            # Under py-spy: end the server; py-spy writes its file when its child has ended.
            os.kill(python_pid(server.process, True), signal.SIGTERM)
            server.process.wait(60)
        stop(server.process)
        driver.carrier.close()
        driver.phone.close()
    print(f"retransmissions seen: {driver.retransmissions}")
    print("CPU by thread over the whole run: " + ", ".join(f"{n} {t:.2f} s" for n, t in threads))
    if args.spy is not None:
        print(profile_top.summary(args.spy.read_text()))
    print(
        f"CPU per call: min {min(figures):.0f} µs, median {statistics.median(figures):.0f} µs "
        f"({args.repeat} rounds of {args.calls} calls, load avg {os.getloadavg()[0]:.2f})"
    )


def measure_against(workdir: Path, args: argparse.Namespace) -> None:
    """``--before REV``: a server of REV and one of this checkout, rounds alternating."""
    figures: dict[str, list[float]] = {"before": [], "now": []}
    with checkout(args.before) as source:
        (workdir / "before").mkdir()
        (workdir / "now").mkdir()
        old = prepare(workdir / "before", [], "old", source=source)
        new = prepare(workdir / "now", [], "new")
        try:
            for _, driver in (old, new):
                driver.run(args.base, args.concurrency, timeout=300)
            for _ in range(args.repeat):
                for label, (server, driver) in (("before", old), ("now", new)):
                    before = cpu_seconds(server.process.pid)
                    driver.run(args.calls, args.concurrency, timeout=300)
                    after = cpu_seconds(server.process.pid)
                    figures[label].append(1e6 * (after - before) / args.calls)
                    print(f"round {label}: {figures[label][-1]:.0f} µs/call", flush=True)
        finally:
            for server, driver in (old, new):
                stop(server.process)
                driver.carrier.close()
                driver.phone.close()
    print(f"before = {describe(args.before)}")
    for label, values in figures.items():
        print(
            f"CPU per call {label:>6}: min {min(values):.0f} µs, "
            f"median {statistics.median(values):.0f} µs"
        )
    ratio = statistics.median(figures["now"]) / statistics.median(figures["before"])
    print(
        f"now/before {ratio:.2f} ({args.repeat} rounds of {args.calls} calls each, "
        f"load avg {os.getloadavg()[0]:.2f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1200)
    parser.add_argument("--base", type=int, default=200)
    parser.add_argument(
        "--concurrency", type=int, help="calls in flight (default 20; 4 under callgrind)"
    )
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--keep", type=Path, help="copy the callgrind outputs to this folder")
    parser.add_argument("--settle", type=float, default=35.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", help="run the server under cProfile, stats to this file")
    parser.add_argument(
        "--before", metavar="REV", help="alternate rounds with a server of this commit"
    )
    parser.add_argument(
        "--spy", type=Path, help="sample the server with py-spy (raw stacks to this file)"
    )
    args = parser.parse_args()
    if args.concurrency is None:
        args.concurrency = 4 if args.callgrind else 20
    with tempfile.TemporaryDirectory(prefix="bench-call-cpu-") as tmp:
        if args.callgrind:
            measure_callgrind(Path(tmp), args)
        elif args.before:
            measure_against(Path(tmp), args)
        else:
            measure_cpu(Path(tmp), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
