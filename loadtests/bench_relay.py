"""Load test of the RTP relay: how many concurrent G.711 calls one core relays with < 0.1 % loss.

    python -m loadtests.bench_relay [--levels 250,350,500,600,700,800] [--measure 3]
                                    [--wait-quiet 300] [--pin] [--quick] [--before REV]

Three processes, loopback only, everything on uvloop:
- the relay: one ``pbx.media.relay.MediaSession`` per call, and with recording on one
  ``CallRecorder`` per call writing to a temporary directory (removed at the end);
- the load generator: two UDP sockets per call, the caller's and the callee's, each sending 50
  RTP packets/s (172 bytes: 20 ms of PCMU) to its relay port, in 20 phase groups 1 ms apart (as
  independent calls would be; each group is one batch of sends), timing what comes back;
- this process, which drives the other two over pipes and prints the table.

``--before REV`` (issue #21) adds a second relay process that imports ``pbx`` from a temporary
``git worktree`` of REV (removed at the end) and listens on other ports; each relay mode's level
is run against the current relay, then against REV's (rows marked ``@REV``), with the same
generator, so both figures come from the same minute on the same machine. The end of the run
compares the relay CPU of the two at every level both held. A level given more than once
(``--levels 500,500,500,500``) makes that many pairs, and the end prints their median ratio
as well: on a VM one pair moves by several percent.

Modes, each stepped through the call counts until loss reaches 0.1 % (a failed level is tried
once more, ``--retries``, since the machine may be shared; the whole run stops starting levels
after 170 s, ``--budget``): ``direct`` sends the same traffic endpoint to endpoint without the
relay: the generator's own limit and the baseline latency. ``relay`` and ``relay+rec`` go
through the relay without and with recording. ``relay+srtp`` (issue #18) makes every leg SRTP
(SDES ``AES_CM_128_HMAC_SHA1_80``): the generator encrypts what each phone sends with that
phone's key and decrypts what comes back with the relay's key for that leg (libsrtp through
``pylibsrtp``, as the relay), so the relay decrypts and re-encrypts every packet, through real
sockets. ``relay+kernel`` (issue #21, docs/design.md 9.15) gives the sessions the kernel fast
path (``pbx.media.kernel``, nftables; needs root): 2 s of traffic that is not measured (CPU
included) let the relay's ticks hand the calls over, then the kernel forwards them. It costs the
relay process little; the kernel forwards in the senders' system calls and softirqs, charged to
whatever runs then (here mostly the generator), so the end of the run prints, for each level
held, the whole machine's CPU beyond the ``direct`` mode's at the same level: a difference of
two noisy figures (run ``direct`` too, and repeat). ``relay+rec+kernel`` records every call as
``relay+rec`` does, with the kernel fast path: the kernel forwards each packet and copies it to
one socket of the forwarder's for the recorder (``Flow.copy``), read every 10 ms, so the relay
sends none; its cost is printed the same way. A packet counts as lost if it never arrives or arrives
more than 50 ms after it was sent (it would miss a phone's jitter buffer). Latency is one-way
(send to receive; CLOCK_MONOTONIC is shared by processes); "added" is the relay's mean latency
minus the direct mean at the same call count. Jitter is the RFC 3550 §6.4.1 interarrival jitter
estimate, averaged over streams. "relay" and "gen" are the CPU each process used (1.0 = one
core; the relay is one asyncio thread plus the recorder's short writes), "other" what the rest
of the machine used meanwhile, "lag" the generator's worst lateness against its schedule.

Measured on the 2-CPU development VM (2026-11-25, uvloop 0.23, Python 3.11): relay 600 calls
(60,000 packets/s) held at 57-83 % of one core, added latency 0.1-0.3 ms mean up to 500 calls;
with recording 250 calls at 47-60 %. Above that the two CPUs are full (relay + generator +
loopback), so the table also shows the CPU-based projection per fully used core.

SRTP (2026-12-07, ``--quick --modes relay,relay+srtp``, others' tests running): at 250 calls
both held with 0 % loss; relay CPU 31 % plain (~809 calls per fully used core) against 57 %
SRTP<->SRTP (~442 calls per core); mean one-way latency 0.7 ms plain, 1.4 ms SRTP. A first
SRTP try at 250 lost 12 % while the machine was busy with others' work ("other" 71 %) and held
on the retry.

rtpengine (issue #20, ``--modes relay,rtpengine``): a private userspace rtpengine
(``--table=-1``: no kernel forwarding here) relays the same generated calls, set up through
``pbx.media.rtpengine.RtpengineMedia`` over ng; its CPU is all its threads' (procfs). Measured
2026-12-07 02:26-02:35 UTC while three other sessions kept both CPUs busy ("other" 120-170 %),
so the loss columns are the machine's, not the relays' (both lost packets at 100-250 calls in
some tries and held in others); the CPU per call is the usable figure: at 100 calls the
built-in relay used 14-16 % of one core (~650-700 calls per fully used core), rtpengine
17-20 % (~500-590); at 150 calls rtpengine 22 % (~680), at 250 calls 34-44 % (~570-735).
Userspace rtpengine costs about what the built-in relay does per packet; its gains are that
it is multi-threaded (it can use every core, the node's relay one) and that the nodes no
longer relay at all. Kernel forwarding (the xt_RTPENGINE module) could not be measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import multiprocessing
import multiprocessing.connection
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.before import checkout

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
RELAY_PORTS = (20000, 29999)
# The --before relay's range (both relays are up at once), below the ephemeral ports as well.
BEFORE_PORTS = (10000, 19999)
RTPENGINE_PORTS = (30000, 39999)  # the rtpengine mode's relay (4 ports a call: RTP and RTCP)
# The +kernel modes: unmeasured traffic first, for the relay's ticks (0.5 s) to hand the calls
# over.
KERNEL_HANDOVER = 2.0
PACKET_INTERVAL = 0.020  # 50 packets/s per direction
PHASES = 20  # phase groups, one every millisecond
LOSS_LIMIT = 0.001  # 0.1 %
LATE_MS = 50.0  # one-way latency beyond which a packet counts as lost (jitter buffer)
HEADER = struct.Struct("!BBHIIq")  # RTP header + send time (ns) at the start of the payload
PAYLOAD_PAD = b"\xff" * (160 - 8)
HISTOGRAM_BUCKET_NS = 20_000  # 20 µs
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
PHONE_KEY = bytes(range(30))  # what every simulated phone sends with (master key + salt)
HISTOGRAM_SIZE = 10_000  # up to 200 ms
TIME_BUDGET = 170.0  # seconds, whole run


def _raise_open_files_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _pin(cpu: int) -> None:
    """Pin this process to one CPU if asked (BENCH_RELAY_PIN=1; set by --pin), and renice it.

    Off by default: on a shared machine a pinned process cannot escape a busy CPU, which
    measures the neighbours rather than the relay. The relay is one asyncio thread either way,
    so it never uses more than one core; its CPU column shows how much of one it used.
    """
    nice = int(os.environ.get("BENCH_RELAY_NICE", "0"))
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    if os.environ.get("BENCH_RELAY_PIN", "0") != "1":
        return
    with contextlib.suppress(AttributeError, OSError):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > 1:
            os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


def _serve(conn: multiprocessing.connection.Connection, handlers: dict[str, Any]) -> None:
    """Run a child's uvloop, answering (command, args) messages from the pipe."""
    import uvloop

    _raise_open_files_limit()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        busy = asyncio.Lock()
        tasks: set[asyncio.Task[None]] = set()

        async def handle(command: str, args: Any) -> None:
            async with busy:
                try:
                    if command == "exit":
                        result: Any = None
                        stop.set_result(None)
                    else:
                        result = await handlers[command](*args)
                    conn.send(("ok", result))
                except Exception as exc:
                    conn.send(("error", f"{type(exc).__name__}: {exc}"))

        def dispatch(message: Any) -> None:
            if message is None:
                if not stop.done():
                    stop.set_result(None)
                return
            command, args = message
            tasks.add(task := loop.create_task(handle(command, args)))
            task.add_done_callback(tasks.discard)

        def read_pipe() -> None:
            # A thread blocked in recv: the pipe stays blocking, so large messages arrive whole.
            while True:
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    message = None
                loop.call_soon_threadsafe(dispatch, message)
                if message is None or message[0] == "exit":
                    return

        threading.Thread(target=read_pipe, name="pipe-reader", daemon=True).start()
        await stop

    uvloop.run(main())


def _empty(directory: Path) -> None:
    for path in directory.iterdir():
        path.unlink()


# --- the relay process ------------------------------------------------------------------------


def relay_process(
    conn: multiprocessing.connection.Connection,
    root: str | None = None,
    ports: tuple[int, int] = RELAY_PORTS,
) -> None:
    """Host MediaSessions (and recorders) for the calls the driver asks for; ``root``: import
    ``pbx`` from that checkout (``--before``) instead of this one."""
    _pin(0)
    if root is not None:
        sys.path.insert(0, root)  # before the first import of pbx in this process
    import logging

    import structlog

    # Per-call "recording_finished" lines would drown the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    from pbx.media.recorder import CallRecorder
    from pbx.media.relay import MediaSession, PortPool, Side
    from pbx.media.sdes import Crypto

    pool = PortPool(*ports)
    sessions: list[MediaSession] = []
    recorders: list[CallRecorder] = []
    record_dir = Path(tempfile.mkdtemp(prefix="bench_relay_rec_"))
    forwarder: Any = None  # the kernel fast path, made for the first +kernel level

    async def kernel_forwarder() -> Any:
        nonlocal forwarder
        if forwarder is None:
            from pbx.media.kernel import KernelForwarder

            forwarder = KernelForwarder(asyncio.get_running_loop())
            forwarder.start()
            async with asyncio.timeout(10):
                loaded = await forwarder.started()
            if not loaded:
                raise RuntimeError("relay+kernel: nft could not load the table (root needed)")
        return forwarder

    async def open_calls(
        count: int, record: bool, srtp: bool = False, kernel: bool = False
    ) -> list[Any]:
        fast = await kernel_forwarder() if kernel else None
        for i in range(count):
            options = {"kernel": fast} if fast is not None else {}
            session = await MediaSession.open(pool, HOST, inactivity_seconds=3600, **options)
            sessions.append(session)
            if srtp:  # both phones send with PHONE_KEY; the relay answers with its own keys
                for side in Side:
                    session.set_crypto(side, Crypto(1, SRTP_SUITE, PHONE_KEY))
            if record:
                recorders.append(await CallRecorder.start(record_dir, f"call{i}.wav", session))
        if srtp:
            return [
                ((s.a.port, s.b.port), (s.srtp_keys[Side.A], s.srtp_keys[Side.B])) for s in sessions
            ]
        return [(s.a.port, s.b.port) for s in sessions]

    async def set_remotes(addresses: list[tuple[tuple[str, int], tuple[str, int]]]) -> None:
        for session, (a, b) in zip(sessions, addresses, strict=True):
            session.set_remote(Side.A, *a)
            session.set_remote(Side.B, *b)

    async def counters() -> dict[str, float]:
        relayed = dropped = 0
        for s in sessions:
            for side in Side:
                st = s.stats(side)
                relayed += st.rtp_relayed
                dropped += st.rtp_dropped
        return {"relayed": relayed, "dropped": dropped, "cpu": time.process_time()}

    async def close_calls() -> dict[str, float]:
        result = await counters()
        late = 0
        for recorder in recorders:
            late += (await recorder.close()).late_packets
        for session in sessions:
            session.close()
        if forwarder is not None:
            await forwarder.settled()  # the flows of the closed sessions removed: ports reused
            result["kernel_forwarded"] = forwarder.rtp_forwarded
        recorders.clear()
        sessions.clear()
        await asyncio.to_thread(_empty, record_dir)
        result["in_use_after_close"] = pool.in_use
        result["late_recorded"] = late
        return result

    ng = _rtpengine_handlers() if root is None else {}
    try:
        _serve(
            conn,
            {
                "open": open_calls,
                "remote": set_remotes,
                "counters": counters,
                "close": close_calls,
                **ng,
            },
        )
    finally:
        if forwarder is not None:
            forwarder.close()  # its table too
        shutil.rmtree(record_dir, ignore_errors=True)


# --- rtpengine (issue #20): the same calls through rtpengine, set up over ng -----------------


def start_rtpengine(pin: bool) -> tuple[Any, int]:
    """A private userspace rtpengine for the ``rtpengine`` mode: (process, ng port)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        port = int(probe.getsockname()[1])
    binary = shutil.which("rtpengine")
    if binary is None:
        raise SystemExit("rtpengine mode: rtpengine-daemon is not installed (scripts/test.sh)")
    process = subprocess.Popen(
        [
            binary,
            "--table=-1",
            f"--interface={HOST}",
            f"--listen-ng={HOST}:{port}",
            "--foreground",
            "--log-stderr",
            "--log-level=3",
            f"--port-min={RTPENGINE_PORTS[0]}",
            f"--port-max={RTPENGINE_PORTS[1]}",
            "--delete-delay=0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, {0})) if pin else None,
    )
    return process, port


def _process_cpu(pid: int) -> float:
    """CPU-seconds (user + system, every thread) a process has used, from procfs."""
    stat = Path(f"/proc/{pid}/stat").read_bytes().decode("ascii")
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rtpengine_handlers() -> dict[str, Any]:
    """The relay child's ``ng_*`` commands: the calls are ``RtpengineMedia`` calls (the module
    the node uses), rtpengine's CPU is read from /proc (all its threads)."""
    target = os.environ.get("BENCH_RTPENGINE", "")
    if not target:
        return {}
    pid, port = (int(x) for x in target.split(":"))
    from pbx.config.model import MediaSettings
    from pbx.media.g711 import Codec
    from pbx.media.relay import Side
    from pbx.media.rtpengine import RtpengineMedia
    from pbx.media.sdp import AudioStream, Direction

    media = RtpengineMedia(time.monotonic, (HOST, port))
    calls: list[str] = []

    async def open_calls(count: int, *_: Any) -> list[Any]:
        async def one(i: int) -> tuple[int, int]:
            ports = await media.open(f"c{i}", MediaSettings(), HOST, lambda side: None)
            calls.append(f"c{i}")
            return ports

        out: list[Any] = []
        for first in range(0, count, 100):  # bounded: the ng client's max_pending
            out += await asyncio.gather(*(one(i) for i in range(first, min(count, first + 100))))
        return out

    async def set_remotes(addresses: list[tuple[tuple[str, int], tuple[str, int]]]) -> None:
        for call, (a, b) in zip(calls, addresses, strict=True):
            for side, (host, rtp) in ((Side.A, a), (Side.B, b)):
                stream = AudioStream(host, rtp, Direction.SENDRECV, (Codec.PCMU,), None)
                media.set_remote(call, side, stream)
        await asyncio.gather(*media._tasks)

    async def counters() -> dict[str, float]:
        return {"relayed": 0, "dropped": 0, "cpu": _process_cpu(pid)}

    async def close_calls() -> dict[str, float]:
        result = await counters()
        for call in calls:
            media.release(call)
        calls.clear()
        await asyncio.gather(*media._tasks)
        result["in_use_after_close"] = media.ports_in_use
        result["late_recorded"] = 0
        return result

    return {
        "ng_open": open_calls,
        "ng_remote": set_remotes,
        "ng_counters": counters,
        "ng_close": close_calls,
    }


# --- the load generator process ---------------------------------------------------------------


class _Stream(asyncio.DatagramProtocol):
    """One direction's receiving end: counts, latency histogram, RFC 3550 jitter."""

    __slots__ = ("generator", "jitter", "last_transit", "transport", "unprotect")

    def __init__(self, generator: _Generator) -> None:
        self.generator = generator
        self.transport: Any = None
        self.unprotect: Any = None  # SRTP: decrypts with the relay's key for this leg
        self.last_transit = 0
        self.jitter = 0.0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = time.monotonic_ns()
        if self.unprotect is not None:
            data = self.unprotect(data)
        sent = HEADER.unpack_from(data)[5]
        g = self.generator
        if not g.window_start <= sent < g.window_end:
            return
        transit = now - sent
        g.received += 1
        if transit > g.late_ns:
            g.late += 1
        g.latency_sum += transit
        bucket = transit // HISTOGRAM_BUCKET_NS
        g.histogram[bucket if bucket < HISTOGRAM_SIZE else HISTOGRAM_SIZE - 1] += 1
        if self.last_transit:
            d = transit - self.last_transit
            self.jitter += ((d if d > 0 else -d) - self.jitter) / 16
        self.last_transit = transit


def _same(stream: _Stream) -> _Stream:
    return stream


class _Generator:
    def __init__(self) -> None:
        self.streams: list[_Stream] = []  # receivers, two per call
        self.senders: list[Any] = []  # transports, two per call (index matches the call)
        self.window_start = 0
        self.window_end = 0
        self.received = 0
        self.late = 0
        self.late_ns = int(LATE_MS * 1e6)
        self.sent_in_window = 0
        self.latency_sum = 0
        self.histogram = [0] * HISTOGRAM_SIZE
        self.max_lag = 0.0
        self.direct: list[tuple[str, int]] | None = None  # direct mode: each sender's partner
        self.protects: list[Any] | None = None  # SRTP mode: each sender's encryption

    async def setup(self, targets: list[Any] | int) -> list[Any]:
        """Bind two sockets per call: to relay ports (a list) or to each other (a count). SRTP:
        each target is ``((port_a, port_b), (relay_key_a, relay_key_b))``."""
        loop = asyncio.get_running_loop()
        keys = None
        if isinstance(targets, list) and targets and isinstance(targets[0][0], (list, tuple)):
            from pylibsrtp import Policy, Session

            keys = [k for _, k in targets]
            targets = [ports for ports, _ in targets]
            self.protects = []
        calls = targets if isinstance(targets, list) else [None] * targets
        addresses: list[Any] = []
        for target in calls:
            pair = []
            for leg in range(2):
                stream = _Stream(self)
                remote = (HOST, target[leg]) if target else None
                transport, _ = await loop.create_datagram_endpoint(
                    functools.partial(_same, stream), local_addr=(HOST, 0), remote_addr=remote
                )
                pair.append(transport)
                self.streams.append(stream)
                if keys is not None and self.protects is not None:
                    relay_key = keys[len(addresses)][leg]
                    inbound = Session(Policy(key=relay_key, ssrc_type=Policy.SSRC_ANY_INBOUND))
                    stream.unprotect = inbound.unprotect
                    outbound = Session(Policy(key=PHONE_KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
                    self.protects.append(outbound.protect)
            addresses.append(tuple(t.get_extra_info("sockname")[:2] for t in pair))
            self.senders.extend(pair)
        if not isinstance(targets, list):
            # Direct mode: the caller's socket sends to the callee's and vice versa.
            self.direct = [addr for a, b in addresses for addr in (b, a)]
        return addresses

    async def run(self, warmup: float, measure: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        direct = self.direct
        count = len(self.senders)
        groups = [list(range(g, count, PHASES)) for g in range(PHASES)]
        seq = [0] * count
        start = loop.time()
        start_ns = time.monotonic_ns()
        self.window_start = start_ns + int(warmup * 1e9)
        self.window_end = self.window_start + int(measure * 1e9)
        total_ticks = int((warmup + measure) / PACKET_INTERVAL) * PHASES
        cpu0 = time.process_time()
        done = loop.create_future()
        tick = 0
        pack = HEADER.pack
        pad = PAYLOAD_PAD
        protects = self.protects

        def fire() -> None:
            nonlocal tick
            now = loop.time()
            # Absolute deadlines: send every group whose time has come (catch up if late).
            while tick < total_ticks and start + tick * (PACKET_INTERVAL / PHASES) <= now:
                lag = now - (start + tick * (PACKET_INTERVAL / PHASES))
                if lag > self.max_lag:
                    self.max_lag = lag
                sent_ns = time.monotonic_ns()
                in_window = self.window_start <= sent_ns < self.window_end
                for i in groups[tick % PHASES]:
                    s = seq[i]
                    packet = pack(0x80, 0, s & 0xFFFF, (s * 160) & 0xFFFFFFFF, i, sent_ns) + pad
                    if protects is not None:
                        packet = protects[i](packet)
                    if direct is None:
                        self.senders[i].sendto(packet)
                    else:
                        self.senders[i].sendto(packet, direct[i])
                    seq[i] = s + 1
                if in_window:
                    self.sent_in_window += len(groups[tick % PHASES])
                tick += 1
            if tick >= total_ticks:
                done.set_result(None)
            else:
                loop.call_at(start + tick * (PACKET_INTERVAL / PHASES), fire)

        fire()
        await done
        cpu = time.process_time() - cpu0
        await asyncio.sleep(0.3)  # let the last packets arrive
        return self._report(cpu / (loop.time() - start))

    def _report(self, cpu: float) -> dict[str, Any]:
        def percentile(p: float) -> float:
            target = p * self.received
            running = 0
            for bucket, n in enumerate(self.histogram):
                running += n
                if running >= target:
                    return (bucket + 0.5) * HISTOGRAM_BUCKET_NS / 1e6
            return float("nan")

        return {
            "sent": self.sent_in_window,
            "received": self.received,
            "late": self.late,
            "latency_ms": self.latency_sum / max(1, self.received) / 1e6,
            "p50_ms": percentile(0.5),
            "p99_ms": percentile(0.99),
            "jitter_ms": sum(s.jitter for s in self.streams) / max(1, len(self.streams)) / 1e6,
            "max_lag_ms": self.max_lag * 1000,
            "cpu": cpu,
        }

    async def teardown(self) -> None:
        for t in self.senders:
            t.close()
        self.senders.clear()


def generator_process(conn: multiprocessing.connection.Connection) -> None:
    """Send and receive the calls' RTP."""
    _pin(1)
    state = {"g": _Generator()}

    async def setup(targets: Any) -> Any:
        state["g"] = _Generator()
        return await state["g"].setup(targets)

    async def run(warmup: float, measure: float) -> Any:
        return await state["g"].run(warmup, measure)

    async def teardown() -> None:
        await state["g"].teardown()

    _serve(conn, {"setup": setup, "run": run, "teardown": teardown})


# --- the driver -------------------------------------------------------------------------------


class _Child:
    def __init__(self, target: Any, name: str, *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=target, args=(child_conn, *args), name=name, daemon=True)
        self.process.start()
        child_conn.close()

    def call(self, command: str, *args: Any, timeout: float = 60.0) -> Any:
        self.conn.send((command, args))
        if not self.conn.poll(timeout):
            raise TimeoutError(f"{self.process.name}: no answer to {command} in {timeout} s")
        status, result = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"{self.process.name}: {command} failed: {result}")
        return result

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call("exit", timeout=5)
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


@dataclass
class Result:
    mode: str
    calls: int
    loss: float
    latency_ms: float
    p50_ms: float
    p99_ms: float
    jitter_ms: float
    relay_cpu: float | None
    gen_cpu: float
    gen_lag_ms: float
    others: float
    machine: float = 0.0  # the whole machine's CPU meanwhile (1.0 = one core)

    @property
    def ok(self) -> bool:
        return self.loss < LOSS_LIMIT


def run_level(
    relay: _Child, gen: _Child, mode: str, calls: int, warmup: float, measure: float
) -> Result:
    relay_cpu = None
    ng = "ng_" if mode == "rtpengine" else ""  # the same steps, through rtpengine
    if mode == "direct":
        gen.call("setup", calls)
    else:
        rec, srtp = mode.startswith("relay+rec"), mode == "relay+srtp"
        kernel = mode.endswith("+kernel")
        ports = relay.call(
            ng + "open", *((calls, rec, srtp, True) if kernel else (calls, rec, srtp)), timeout=120
        )
        addresses = gen.call("setup", ports, timeout=120)
        relay.call(ng + "remote", addresses, timeout=120)
        if kernel:
            # The relay's ticks hand the calls over while this unmeasured traffic flows, so
            # the CPU below is the kernel path's, not that of the relay relaying meanwhile.
            gen.call("run", KERNEL_HANDOVER, 0.0, timeout=KERNEL_HANDOVER + 30)
    try:
        before = relay.call(ng + "counters") if mode != "direct" else None
        busy = _machine_busy()
        wall = time.monotonic()
        report = gen.call("run", warmup, measure, timeout=warmup + measure + 30)
        wall = time.monotonic() - wall
        machine = (_machine_busy() - busy) / wall
        if before is not None:
            after = relay.call(ng + "counters")
            relay_cpu = (after["cpu"] - before["cpu"]) / wall
    finally:
        gen.call("teardown", timeout=60)
        if mode != "direct":
            closed = relay.call(ng + "close", timeout=120)
            assert closed["in_use_after_close"] == 0, "relay leaked ports"
    # Everything else the machine ran meanwhile (it may be shared): a noise indicator.
    others = max(0.0, machine - (relay_cpu or 0.0) - report["cpu"])
    # A packet later than LATE_MS misses the phone's jitter buffer: it counts as lost.
    loss = 1 - (report["received"] - report["late"]) / max(1, report["sent"])
    return Result(
        mode,
        calls,
        max(0.0, loss),
        report["latency_ms"],
        report["p50_ms"],
        report["p99_ms"],
        report["jitter_ms"],
        relay_cpu,
        report["cpu"],
        report["max_lag_ms"],
        others,
        machine,
    )


def _wait_until_quiet(limit: float) -> None:
    """Sleep until the machine was nearly idle for 2 s, or until limit seconds have passed."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = _machine_busy()
        time.sleep(2.0)
        busy = (_machine_busy() - before) / 2.0
        if busy < 0.3:
            return
    print(f"machine still busy after {limit:g} s; measuring anyway", flush=True)


def _machine_busy() -> float:
    """CPU-seconds the whole machine has spent busy since boot (from /proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _row(r: Result, direct: Result | None, width: int = 10) -> str:
    added = (
        f"{r.latency_ms - direct.latency_ms:7.3f}" if direct and r.mode != "direct" else "      -"
    )
    relay_cpu = f"{100 * r.relay_cpu:5.0f}%" if r.relay_cpu is not None else "     -"
    return (
        f"{r.mode:<{width}} {r.calls:>6} {r.calls * 100:>8} {100 * r.loss:8.3f}"
        f" {r.latency_ms:8.3f} {added} {r.p50_ms:7.2f} {r.p99_ms:7.2f} {r.jitter_ms:7.3f}"
        f" {relay_cpu} {100 * r.gen_cpu:5.0f}% {100 * r.others:5.0f}%"
        f" {r.gen_lag_ms:7.1f}  {'ok' if r.ok else 'LOSS'}"
    )


def _revision(rev: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", rev],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="250,350,500,600,700,800")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--measure", type=float, default=3.0)
    parser.add_argument("--modes", default="direct,relay,rtpengine,relay+srtp,relay+rec")
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="repeat a failed level this often before stopping (the machine may be shared)",
    )
    parser.add_argument("--pin", action="store_true", help="pin the relay to CPU 0, load to CPU 1")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness change for the relay and load processes (negative needs root)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for the machine to be idle (< 0.3 CPUs busy)",
    )
    parser.add_argument("--quick", action="store_true", help="two levels, 1 s each (smoke)")
    parser.add_argument(
        "--budget",
        type=float,
        default=TIME_BUDGET,
        metavar="SECONDS",
        help=f"stop starting levels after this long (default {TIME_BUDGET:g}; doubled with "
        "--before)",
    )
    parser.add_argument(
        "--before",
        metavar="REV",
        default=None,
        help="also run each relay mode's levels against the relay of git revision REV "
        "(a temporary worktree), each level right after the current relay's",
    )
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    if args.quick:
        levels, args.warmup, args.measure = [50, 250], 0.5, 1.0
    modes = args.modes.split(",")
    # Read by the children (spawned, so they inherit the environment).
    os.environ["BENCH_RELAY_PIN"] = "1" if args.pin else "0"
    os.environ["BENCH_RELAY_NICE"] = str(args.nice)
    _raise_open_files_limit()
    if args.wait_quiet > 0:
        _wait_until_quiet(args.wait_quiet)
    began = time.monotonic()
    budget = args.budget * (2 if args.before else 1)
    before_tag = f"@{_revision(args.before)}" if args.before else ""
    width = max(10, *(len(m) + len(before_tag) for m in modes))
    print(
        f"bench_relay: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, uvloop, "
        f"G.711 20 ms (50 packets/s per direction, 100 per call), loss limit "
        f"{100 * LOSS_LIMIT:.1f} % (later than {LATE_MS:g} ms = lost), "
        f"{args.warmup:g} s warm-up + {args.measure:g} s measured",
        flush=True,
    )
    if args.before:
        print(f"rows marked {before_tag}: the relay of {args.before} (baseline)", flush=True)
    header = (
        f"{'mode':<{width}} {'calls':>6} {'pkt/s':>8} {'loss%':>8} {'mean ms':>8} {'added':>7}"
        f" {'p50':>7} {'p99':>7} {'jitter':>7} {'relay':>6} {'gen':>6} {'other':>6} {'lag ms':>7}"
    )
    rtpengine = start_rtpengine(args.pin) if "rtpengine" in modes else None
    if rtpengine is not None:  # read by the relay child, which drives it over ng
        os.environ["BENCH_RTPENGINE"] = f"{rtpengine[0].pid}:{rtpengine[1]}"
        time.sleep(0.5)  # its control socket is up well within this
    results: list[Result] = []
    labels: list[str] = []
    with checkout(args.before) if args.before else contextlib.nullcontext() as before_root:
        relay = _Child(relay_process, "bench-relay")
        gen = _Child(generator_process, "bench-generator")
        before = (
            _Child(relay_process, "bench-relay-before", str(before_root), BEFORE_PORTS)
            if before_root is not None
            else None
        )
        try:
            print(header, flush=True)
            for mode in modes:
                relays = [(mode, relay)]
                if before is not None and mode.startswith("relay") and not mode.endswith("+kernel"):
                    relays.append((mode + before_tag, before))
                labels += [label for label, _ in relays]
                stopped: set[str] = set()
                for calls in levels:
                    for label, child in relays:
                        if label in stopped:
                            continue
                        result = None
                        for attempt in range(1 + args.retries):
                            if time.monotonic() - began > budget:
                                break
                            result = run_level(child, gen, mode, calls, args.warmup, args.measure)
                            result.mode = label
                            direct = next(
                                (d for d in results if d.mode == "direct" and d.calls == calls),
                                None,
                            )
                            retry = " (retry)" if attempt else ""
                            print(_row(result, direct, width) + retry, flush=True)
                            if result.ok:
                                break
                        if result is None:
                            print(f"{label:<{width}} time budget reached, stopping", flush=True)
                            stopped.add(label)
                            continue
                        results.append(result)
                        if not result.ok:
                            stopped.add(label)
                    if len(stopped) == len(relays):
                        break
        finally:
            gen.stop()
            relay.stop()
            if before is not None:
                before.stop()
            if rtpengine is not None:  # ended by its pid
                rtpengine[0].terminate()
                try:
                    rtpengine[0].wait(10)
                except Exception:
                    rtpengine[0].kill()
                    rtpengine[0].wait()
    print()
    for label in labels:
        held = [r for r in results if r.mode == label and r.ok]
        tried = [r for r in results if r.mode == label]
        best = max(held, key=lambda r: r.calls) if held else None
        note = "" if len(held) < len(tried) else " (every level tried held; the limit is higher)"
        line = (
            f"most concurrent calls with < 0.1 % loss, {label:<{width}}: "
            f"{best.calls if best else 0}"
        )
        if best is not None and best.mode.endswith("+kernel"):
            line += _kernel_cost(best, results)
        elif best is not None and best.relay_cpu:
            # CPU cost per call at that level: how many calls one whole core would carry.
            line += (
                f"; relay CPU {100 * best.relay_cpu:.0f} % -> ~{best.calls / best.relay_cpu:.0f}"
            )
            line += " calls per fully used core"
        print(line + note)
        if label.endswith("+kernel"):
            for r in held:  # each level's figure: the whole machine's CPU is a noisy measure
                print(f"  {label} at {r.calls} calls{_kernel_cost(r, results)}")
    if before_tag:
        _print_comparison(results, modes, before_tag)
    print(f"total time {time.monotonic() - began:.0f} s")
    return 0


def _kernel_cost(r: Result, results: list[Result]) -> str:
    """What forwarding in the kernel cost: the kernel forwards in the senders' system calls and
    softirqs, charged to whatever runs then (mostly the generator), so its cost is the whole
    machine's CPU beyond what the same traffic sent directly between the phones used."""
    direct = next((d for d in results if d.mode == "direct" and d.calls == r.calls), None)
    relay = r.relay_cpu or 0.0
    if direct is None:
        return f"; relay process CPU {100 * relay:.0f} % (run the direct mode for the whole cost)"
    extra = r.machine - direct.machine
    cost = max(extra, relay, 1e-3)
    return (
        f"; whole machine {100 * r.machine:.0f} % against {100 * direct.machine:.0f} % direct "
        f"(relay process {100 * relay:.0f} %) -> forwarding costs {100 * extra:+.0f} % of a "
        f"core, ~{r.calls / cost:.0f} calls per fully used core"
    )


def _print_comparison(results: list[Result], modes: list[str], tag: str) -> None:
    """Per relay mode: the CPU per call of both relays at each level both held. A level given
    more than once (``--levels 500,500,500``) pairs its runs in order and also prints the
    median of their ratios: one pair moves by several percent on a VM."""
    for mode in modes:
        now: dict[int, list[float]] = {}
        then: dict[int, list[float]] = {}
        for r in results:
            if r.ok and r.relay_cpu:
                if r.mode == mode:
                    now.setdefault(r.calls, []).append(r.relay_cpu)
                elif r.mode == mode + tag:
                    then.setdefault(r.calls, []).append(r.relay_cpu)
        for calls in sorted(now.keys() & then.keys()):
            pairs = list(zip(now[calls], then[calls], strict=False))
            for a, b in pairs:
                print(
                    f"{mode} at {calls} calls: relay CPU {100 * a:.0f} % now, {100 * b:.0f} % "
                    f"{tag} -> ~{calls / a:.0f} vs ~{calls / b:.0f} calls per fully used core"
                    f" ({a / b:.2f}x the CPU)"
                )
            if len(pairs) > 1:
                ratios = [a / b for a, b in pairs]
                print(
                    f"{mode} at {calls} calls: median of {len(pairs)} pairs "
                    f"{statistics.median(ratios):.2f}x the CPU of {tag} "
                    f"(~{calls / statistics.median(a for a, _ in pairs):.0f} vs "
                    f"~{calls / statistics.median(b for _, b in pairs):.0f} calls per core)"
                )


if __name__ == "__main__":
    sys.exit(main())
