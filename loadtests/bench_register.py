"""Load test of the registrar: authenticated registrations per second, against SIPp's own limit.

    python -m loadtests.bench_register [--seconds 30] [--rates 500,1000,...] [--quick]

Loopback only. It writes a load configuration to a temporary directory (10,000 users with clear
passwords, in two generated tenant files of 5,000: an extension has four digits, 0000-8999, so
one tenant cannot hold 10,000; ``max_users`` large; the per-source rate limit and the ban
threshold lifted, since all the load comes from 127.0.0.1), starts ``pbx run`` on it, and drives
SIPp (``tests/sipp/register_load.xml``: REGISTER, 401, REGISTER with MD5 digest, 200; users from
an injection CSV of the 10,000, in sequence) at rising rates, each held for ``--seconds``. The
phones keep one address through the run, so after the first step every registration refreshes
a binding (10,000 bindings in all); ``--moving-phones`` gives them a new address at each step,
so each step adds a contact per extension (up to ``max_contacts``, 5) and the 200 OKs list them.

A step passes when every registration of it succeeded (no failed call, no timeout), fewer than
0.1 % of the requests were retransmitted, and SIPp kept the rate (the step took at most 3 % + 1 s
longer than planned). The stepping stops at the first failed step. The same is then done against
a SIPp UAS (``tests/sipp/register_load_uas.xml``: challenges, then accepts), which measures the
load generator's own limit on this machine in the same run. The table shows for each step the
achieved rate, failures, retransmissions, response time and the server's CPU use.

Every process is started here and ended by its pid. The run stops stepping when its time budget
(``--budget``, default 540 s) would be exceeded.

CPU per registration (issue #21): each row also shows the server's CPU time per successful
registration (utime + stime from /proc over the step, divided by the registrations). Rates depend
on how busy the machine is; this figure much less.

- ``--before REV``: the same steps are run first against a server started from a git worktree of
  ``REV`` (``loadtests.before.checkout``: a temporary folder, removed at the end; the server
  runs with cwd and PYTHONPATH = that worktree), then against this checkout; the two figures are
  printed side by side at the end. With ``--rates 1500 --no-baseline`` that is the CPU per
  registration at a fixed rate, before and after, in the same run.
- ``--warmup``: seconds at the first rate before the measured steps (unmeasured), so the measured
  steps refresh bindings as phones do, instead of creating them: give it at least 10,000
  registrations (``--warmup 7`` at 1,500/s), or the first step still creates some bindings.
  For the steady state give it at least 32 s (``--warmup 40``): an authenticated REGISTER's
  server transaction lingers 32 s (timer J) and is cleaned up then, so only a step that starts
  32 s into the load holds the clean-up of the registrations before it at the rate they are
  made (as ``bench_calls --cpu-settle`` does for calls).
- ``--spy FILE``: the server runs under py-spy (500 Hz, raw stacks to FILE; the ``--before``
  server's to ``FILE.REV``), and the functions with the most samples are printed
  (``loadtests.profile_top``). Under py-spy the CPU figures are not the server's alone.
- ``--rounds N``: the pair of servers N times, alternating which runs first. On a shared machine
  one run's figure can be 20 % off the next (an A/A run, ``--before HEAD``, gave 0.46 to 0.61 ms
  per registration), so compare several rounds, or instruction counts (callgrind) for small
  changes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests import profile_top
from loadtests.before import checkout

REPO = Path(__file__).resolve().parents[1]
SIPP_DIR = REPO / "tests" / "sipp"
HOST = "127.0.0.1"
USERS_PER_TENANT = 5_000
TENANTS = 2
RETRANSMISSION_LIMIT = 0.001  # 0.1 % of the requests sent
LATE_FACTOR = 1.03  # a step may take 3 % (+1 s) longer than planned, no more
SERVER_RATES = (500, 750, 1000, 1250, 1500, 1750, 2000, 2500, 3000, 3500, 4000)
BASELINE_RATES = (1000, 2000, 3000, 4000, 6000, 8000, 10000, 12000)
START_TIMEOUT = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- set-up ---------------------------------------------------------------------------------


def write_load_config(
    root: Path, port: int, users_per_tenant: int = USERS_PER_TENANT
) -> tuple[Path, Path]:
    """pbx.toml (SIP on UDP ``port``), the generated tenants and the SIPp injection file;
    returns (config, users CSV)."""
    (root / "tenants").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "pbx.toml").write_text(
        textwrap.dedent(
            f"""
            [sip]
            listen = ["udp:{HOST}:{port}"]

            [admin]
            listen = "{HOST}:0"

            [storage]
            data_dir = "data"

            [security]
            # All the load comes from one address: lift the per-source defences.
            max_requests_per_second = 1000000
            ban_after_failures = 1000000

            [media]
            rtp_ports = "23000-23999"

            [[trunks]]
            name = "carrier"
            address = "127.0.0.2:5080"
            """
        ),
        encoding="utf-8",
    )
    rows = ["SEQUENTIAL"]
    for t in range(TENANTS):
        domain = f"bench{t}.example"
        # Keep-alives off: SIPp's phones never answer an OPTIONS, so every contact would be
        # probed and probed again every 30 s (667 OPTIONS/s for 10,000 contacts) inside the
        # figure per registration; their cost is bench_keepalive's.
        lines = tenant_header(domain, default=t == 0, recording_users=0, qualify_seconds=0)
        for i in range(users_per_tenant):
            extension = f"{1000 + i:04d}"
            password = f"pw-{t}-{extension}"
            lines += ["[[users]]", f'extension = "{extension}"', f'password = "{password}"', ""]
            rows.append(
                f"{extension};{domain};[authentication username={extension} password={password}]"
            )
        (root / "tenants" / f"bench{t}.toml").write_text("\n".join(lines), encoding="utf-8")
    users = root / "users.csv"
    users.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root / "pbx.toml", users


def tenant_header(
    domain: str, *, default: bool, recording_users: int, qualify_seconds: int | None = None
) -> list[str]:
    """The ``[tenant]`` and ``[limits]`` lines of a load-test tenant file (Tokyo, no user cap;
    ``qualify_seconds``: the keep-alive interval, the default when None)."""
    return [
        "[tenant]",
        f'domain = "{domain}"',
        'timezone = "Asia/Tokyo"',
        f"default = {'true' if default else 'false'}",
        *([] if qualify_seconds is None else [f"qualify_seconds = {qualify_seconds}"]),
        "",
        "[limits]",
        "max_users = 100000",
        f"recording_users = {recording_users}",
        "",
    ]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL: only ever a process started here, by its pid."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def pbx_server(
    config: Path,
    port: int,
    log_path: Path,
    log_level: str,
    *,
    source: Path = REPO,
    spy: Path | None = None,
) -> Iterator[int]:
    """Run ``pbx run`` from the checkout ``source`` (cwd and PYTHONPATH); yields its pid once it
    answers an OPTIONS on UDP ``port``. ``spy``: under py-spy, raw stacks to that file (the pid
    yielded is then the server's, py-spy's child)."""
    prefix = []
    if spy is not None:
        # --nonblocking: py-spy reads the stacks without pausing the server (less perturbation).
        prefix = ["py-spy", "record", "--format", "raw", "--rate", "500", "--nonblocking"]
        prefix += ["-o", str(spy), "--"]
    env = {**os.environ, "PYTHONPATH": str(source)}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                *prefix,
                *(sys.executable, "-m", "pbx", "run", "--config", str(config)),
                *("--log-json", "--log-level", log_level),
            ],
            cwd=source,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers_options(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pbx did not start; see {log_path}")
        pid = _spied_child(process.pid) if spy is not None else process.pid
        try:
            yield pid
        finally:
            if spy is not None and process.poll() is None:
                # py-spy writes its file once its child has ended: end the server first.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(60)
    finally:
        stop(process)


def _spied_child(pid: int) -> int:
    """The server's pid under py-spy: py-spy's child."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = children.read_text().split() if children.exists() else []
    return int(found[0]) if found else pid


def _answers_options(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(0.2)
        local = sock.getsockname()[1]
        sock.sendto(
            (
                f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {HOST}:{local};branch=z9hG4bK{time.monotonic_ns()}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:probe@{HOST}>;tag=p\r\n"
                f"To: <sip:{HOST}:{port}>\r\nCall-ID: probe-{time.monotonic_ns()}\r\n"
                "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            (HOST, port),
        )
        try:
            return sock.recv(65536).startswith(b"SIP/2.0 200")
        except TimeoutError:
            return False


@contextlib.contextmanager
def sipp_uas(workdir: Path) -> Iterator[tuple[int, int]]:
    """The baseline registrar (a SIPp UAS); yields (pid, UDP port)."""
    port = free_udp_port()
    process = subprocess.Popen(
        [
            *(sipp_binary(), "-sf", str(SIPP_DIR / "register_load_uas.xml"), "-t", "u1"),
            *("-i", HOST, "-p", str(port), "-nostdin", "-max_recv_loops", "10000"),
            *("-buff_size", "4194304"),
        ],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)  # SIPp has no readiness signal; a UDP server needs no accept
        if process.poll() is not None:
            raise RuntimeError("the SIPp UAS did not start")
        yield process.pid, port
    finally:
        stop(process)


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise SystemExit("sipp is not installed (Debian package sip-tester)")
    return path


# --- one step -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    rate: int
    planned: int  # registrations
    succeeded: int
    failed: int
    retransmissions: int
    elapsed: float  # seconds, SIPp's whole run
    response_ms: float  # SIPp's mean response time (401 + 200 exchanges, "call length")
    cpu: float | None  # the server's CPU use over the step, in % of one core
    cpu_seconds: float | None = None  # the server's CPU time over the step
    # Datagrams the kernel dropped at each side's socket during the step (a receive buffer
    # full: that side fell behind), from /proc/net/udp; None when it could not be read.
    server_drops: int | None = None
    sipp_drops: int | None = None

    @property
    def cpu_per_registration_ms(self) -> float | None:
        if self.cpu_seconds is None or not self.succeeded:
            return None
        return 1000.0 * self.cpu_seconds / self.succeeded

    @property
    def achieved(self) -> float:
        return self.succeeded / self.elapsed if self.elapsed else 0.0

    @property
    def retransmission_ratio(self) -> float:
        return self.retransmissions / max(1, 2 * self.planned)  # two requests per registration

    @property
    def passed(self) -> bool:
        seconds = self.planned / self.rate
        return (
            self.failed == 0
            and self.succeeded == self.planned
            and self.retransmission_ratio < RETRANSMISSION_LIMIT
            and self.elapsed <= seconds * LATE_FACTOR + 1.0
        )


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def user_system_seconds(pid: int) -> tuple[float, float]:
    """The process's user and system CPU seconds (the kernel's share: sockets, the loopback)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def thread_cpu(pid: int) -> list[tuple[str, float]]:
    """CPU seconds of each thread of ``pid`` (name, utime + stime), busiest first."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            found.append((name, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS))
    return sorted(found, key=lambda item: -item[1])


def udp_drops(table: str, ports: Iterable[int]) -> dict[int, int]:
    """Datagrams the kernel dropped at the UDP sockets bound to ``ports`` (their receive buffer
    was full), by port, from the text of ``/proc/net/udp``: its last column."""
    wanted = set(ports)
    found: dict[int, int] = {}
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 13 or ":" not in fields[1]:
            continue
        port = int(fields[1].rsplit(":", 1)[1], 16)
        if port in wanted:
            found[port] = found.get(port, 0) + int(fields[-1])
    return found


def _read_udp_table() -> str:
    try:
        return Path("/proc/net/udp").read_text()
    except OSError:
        return ""


def run_step(
    target: int,
    users: Path,
    rate: int,
    seconds: int,
    workdir: Path,
    measured_pid: int,
    local_port: int | None = None,
    host: str = HOST,
) -> Step:
    """SIPp at ``rate`` registrations/s for ``seconds``, to ``host``:``target``, from UDP
    ``local_port`` on 127.0.0.1 (the phones' address, in their Contact; a free one when None)."""
    planned = rate * seconds
    stats = workdir / f"stats-{target}-{rate}.csv"
    sipp_port = local_port if local_port is not None else free_udp_port()
    args = [
        sipp_binary(),
        f"{host}:{target}",
        "-sf",
        str(SIPP_DIR / "register_load.xml"),
        "-inf",
        str(users),
        "-t",
        "u1",
        "-i",
        HOST,
        "-p",
        str(sipp_port),
        "-r",
        str(rate),
        "-m",
        str(planned),
        "-l",
        str(max(1000, rate * 10)),
        "-nostdin",
        "-max_recv_loops",
        "10000",
        "-buff_size",
        "4194304",
        "-recv_timeout",
        "10000",
        "-timeout",
        f"{seconds * 3 + 30}s",
        "-trace_stat",
        "-stf",
        str(stats),
        "-fd",
        "1",
    ]
    cpu_before = cpu_seconds(measured_pid)
    server_drops_before = udp_drops(_read_udp_table(), [target]).get(target)
    sipp_drops: int | None = None
    errors = workdir / f"sipp-stderr-{target}-{rate}.txt"
    started = time.monotonic()
    with errors.open("wb") as err_file:
        process = subprocess.Popen(
            args,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err_file,
        )
        try:
            # SIPp's socket goes with it: its drop count is sampled while it runs.
            deadline = started + seconds * 3 + 60
            while True:
                try:
                    process.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() > deadline:
                        raise
                sipp_drops = udp_drops(_read_udp_table(), [sipp_port]).get(sipp_port, sipp_drops)
        finally:
            stop(process)
    err = errors.read_bytes()
    elapsed = time.monotonic() - started
    cpu_after = cpu_seconds(measured_pid)
    server_drops_after = udp_drops(_read_udp_table(), [target]).get(target)
    server_drops = (
        server_drops_after - server_drops_before
        if server_drops_before is not None and server_drops_after is not None
        else None
    )
    cpu = used = None
    if cpu_before is not None and cpu_after is not None:
        used = cpu_after - cpu_before
        cpu = 100.0 * used / elapsed
    last = _last_stats_row(stats)
    if last is None:
        raise RuntimeError(f"SIPp wrote no statistics: {err.decode(errors='replace')[-2000:]}")
    return Step(
        rate=rate,
        planned=planned,
        succeeded=int(last["SuccessfulCall(C)"]),
        failed=int(last["FailedCall(C)"]),
        retransmissions=int(last["Retransmissions(C)"]),
        elapsed=elapsed,
        response_ms=_duration_ms(last.get("CallLength(C)", "")),
        cpu=cpu,
        cpu_seconds=used,
        server_drops=server_drops,
        sipp_drops=sipp_drops,
    )


def _last_stats_row(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    return rows[-1] if rows else None


def _duration_ms(text: str) -> float:
    """SIPp's ``HH:MM:SS:micro`` as milliseconds (nan when absent)."""
    parts = text.strip().split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return float("nan")
    hours, minutes, secs, micros = (int(p) for p in parts)
    return ((hours * 60 + minutes) * 60 + secs) * 1000 + micros / 1000


# --- the ladder -------------------------------------------------------------------------------


def climb(
    name: str,
    target: int,
    measured_pid: int,
    users: Path,
    rates: Sequence[int],
    seconds: int,
    workdir: Path,
    deadline: float,
    *,
    moving: bool = False,
    steps: list[Step] | None = None,
    local_port: int | None = None,
    server_log: ServerLog | None = None,
) -> Step | None:
    """Step up through ``rates``; the highest passing step (None if the first fails). Every
    step run is appended to ``steps``; ``server_log``: the server's stalls are noted."""
    best = None
    # The same 10,000 phones at every step: one address, so a step refreshes the bindings the
    # last one made. ``moving``: a new address per step, so every step adds a contact to each
    # extension (up to max_contacts, 5) and the 200 OKs list them all.
    if local_port is None and not moving:
        local_port = free_udp_port()
    for rate in rates:
        if time.monotonic() + seconds * 1.5 + 10 > deadline:
            print(f"  {name}: time budget reached before {rate}/s", flush=True)
            break
        step = run_step(target, users, rate, seconds, workdir, measured_pid, local_port)
        # The machine may be shared: the 1-minute load average tells how quiet it was.
        load = os.getloadavg()[0]
        print(f"  {name:8} {_row(step)}  load {load:.2f}{_noted(step, server_log)}", flush=True)
        if steps is not None:
            steps.append(step)
        if not step.passed:
            break
        best = step
    return best


STALL_EVENTS = ("gc_full_collection", "event_loop_lagged", "store_commit_slow", "rtp_port_busy")


def stall_parts(lines: Iterable[Mapping[str, Any]]) -> list[str]:
    """What the server logged about its own stalls among ``lines`` (parsed JSON log lines):
    full collections, event-loop lags, slow commits, busy RTP ports; a phrase each kind (one
    per collection). ``bench_calls`` reports its steps' with it too."""
    collections: list[str] = []
    lags: list[float] = []
    commits: list[float] = []
    busy = 0
    for line in lines:
        event = line.get("event")
        if event == "gc_full_collection":
            blocks = line.get("blocks_before")
            of = f" of {int(blocks) / 1e6:.1f} M blocks" if blocks else ""
            collections.append(f"full gc {line.get('ms')} ms{of}")
        elif event == "event_loop_lagged":
            lags.append(float(line.get("lag_seconds") or 0.0))
        elif event == "store_commit_slow":
            commits.append(float(line.get("seconds") or 0.0))
        elif event == "rtp_port_busy":
            busy += 1
    parts = collections
    if lags:
        parts.append(f"{len(lags)} loop lags (max {max(lags)} s)")
    if commits:
        parts.append(f"{len(commits)} slow commits (max {max(commits)} s)")
    if busy:
        parts.append(f"{busy} RTP ports found busy")
    return parts


class ServerLog:
    """What the server logged about its own stalls during a step (``stall_parts``), read from
    its log file. A failed step with none was delayed outside the server (the load generator,
    the machine: e.g. another process's disk writes throttling SIPp's)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def stalls(self) -> tuple[int, str]:
        """How many stall lines were logged since the last call, and a summary of them."""
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        whole = data.rfind(b"\n") + 1
        self.offset += whole
        lines: list[Mapping[str, Any]] = []
        for raw in data[:whole].splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("event") in STALL_EVENTS:
                lines.append(line)
        return len(lines), "; ".join(stall_parts(lines)) or "no stall logged"


def _noted(step: Step, log: ServerLog | None) -> str:
    """The server's stalls after a step's row, when it had any or the step failed, and the
    datagrams the kernel dropped at either side's socket, when it dropped any or the step
    failed (a side whose receive buffer overflowed fell behind: the server or SIPp)."""
    notes = ""
    if log is not None:
        count, text = log.stalls()
        if count or not step.passed:
            notes += f"  [server: {text}]"
    drops = (step.server_drops, step.sipp_drops)
    if any(drops) or not step.passed:
        server, sipp = ("?" if d is None else f"{d:,}" for d in drops)
        notes += f"  [datagrams dropped by the kernel: {server} at the server, {sipp} at SIPp]"
    return notes


def _row(step: Step) -> str:
    cpu = f"{step.cpu:5.0f} %" if step.cpu is not None else "    -  "
    per = step.cpu_per_registration_ms
    per_text = f"{per:6.3f} ms/reg" if per is not None else "     -       "
    verdict = "pass" if step.passed else "FAIL"
    return (
        f"{step.rate:6d}/s  achieved {step.achieved:7.0f}/s"
        f"  ok {step.succeeded:7d}/{step.planned:<7d}"
        f" failed {step.failed:5d}  retrans {100 * step.retransmission_ratio:6.3f} %"
        f"  mean {step.response_ms:7.1f} ms  cpu {cpu} {per_text}  {verdict}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=30, help="duration of each step")
    parser.add_argument("--rates", help="comma-separated registrations/s for the pbx")
    parser.add_argument("--baseline-rates", help="comma-separated registrations/s for SIPp UAS")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--log-level", default="info", help="the server's log level")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run")
    parser.add_argument("--quick", action="store_true", help="5 s steps (a smoke run)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--moving-phones",
        action="store_true",
        help="a new phone address at each step (contacts accumulate up to max_contacts)",
    )
    parser.add_argument(
        "--before", metavar="REV", help="run the same steps first against a server of this commit"
    )
    parser.add_argument(
        "--warmup", type=int, default=0, help="unmeasured seconds at the first rate, per server"
    )
    parser.add_argument(
        "--spy", type=Path, help="run this checkout's server under py-spy (raw stacks to FILE)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with --before: run the pair this many times, alternating which goes first",
    )
    args = parser.parse_args(argv)
    seconds = 5 if args.quick else args.seconds
    rates = _rates(args.rates, SERVER_RATES)
    baseline_rates = _rates(args.baseline_rates, BASELINE_RATES)
    deadline = time.monotonic() + args.budget
    workdir = Path(tempfile.mkdtemp(prefix="bench-register-"))
    try:
        print(
            f"bench_register: {TENANTS * USERS_PER_TENANT} users, {seconds} s per step, "
            f"UDP on {HOST}, {os.cpu_count()} CPUs, work dir {workdir}",
            flush=True,
        )
        results: list[tuple[str, list[Step], Step | None]] = []
        with contextlib.ExitStack() as stack:
            servers = [("this checkout", REPO)]
            if args.before:
                source = stack.enter_context(checkout(args.before))
                servers.insert(0, (args.before, source))
            # On a shared machine one run's figure can be 20 % off the next (an A/A run, --before
            # HEAD, gave 0.46 to 0.61 ms): with --rounds, the pair repeats, order alternating.
            runs = [
                server
                for round_ in range(args.rounds)
                for server in (servers if round_ % 2 == 0 else servers[::-1])
            ]
            for label, source in runs:
                spy = args.spy
                if spy is not None and source != REPO:  # the --before server's own file
                    spy = spy.with_name(f"{spy.name}.{args.before}")
                steps: list[Step] = []
                best = _server_run(
                    label, source, workdir, rates, seconds, deadline, args, spy, steps
                )
                results.append((label, steps, best))
                if spy is not None:
                    print(profile_top.summary(spy.read_text()), flush=True)
        baseline = None
        if not args.no_baseline:
            with sipp_uas(workdir) as (uas_pid, uas_port):
                print(f"SIPp UAS baseline (pid {uas_pid}, UDP {uas_port}):", flush=True)
                baseline = climb(
                    "sipp-uas",
                    uas_port,
                    uas_pid,
                    _users_file(workdir),
                    baseline_rates,
                    seconds,
                    workdir,
                    deadline,
                )
        print()
        print("Server CPU per registration (REGISTER, 401, REGISTER with digest, 200):")
        for label, steps, _ in results:
            figures = ", ".join(
                f"{s.rate}/s {s.cpu_per_registration_ms:.3f} ms"
                for s in steps
                if s.cpu_per_registration_ms is not None
            )
            print(f"  {label:14} {figures or '-'}")
        print("  target:        <= 0.2 ms")
        print(f"Highest rate sustained {seconds} s with 0 failures and < 0.1 % retransmissions:")
        for label, _, best in results:
            print(f"  pbx {label + ':':16}{_best(best)}")
        if not args.no_baseline:
            print(f"  SIPp UAS baseline:    {_best(baseline)}")
        print("  target:               >= 3000 authenticated registrations/s")
        return 0
    finally:
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _users_file(workdir: Path) -> Path:
    return workdir / "server-0" / "users.csv"


def _server_run(
    label: str,
    source: Path,
    workdir: Path,
    rates: Sequence[int],
    seconds: int,
    deadline: float,
    args: argparse.Namespace,
    spy: Path | None,
    steps: list[Step],
) -> Step | None:
    """One server (from ``source``) on a fresh data directory: warm-up, then the steps."""
    root = workdir / f"server-{len(list(workdir.glob('server-*')))}"
    port = free_udp_port()
    config, users = write_load_config(root, port)
    server_log = root / "pbx.log"
    with pbx_server(config, port, server_log, args.log_level, source=source, spy=spy) as pid:
        print(f"pbx {label} (pid {pid}, UDP {port}, log level {args.log_level}):", flush=True)
        local_port = None if args.moving_phones else free_udp_port()
        stalls = ServerLog(server_log)
        if args.warmup:
            step = run_step(port, users, rates[0], args.warmup, root, pid, local_port)
            load = os.getloadavg()[0]
            print(f"  warm-up  {_row(step)}  load {load:.2f}{_noted(step, stalls)}", flush=True)
        best = climb(
            "pbx",
            port,
            pid,
            users,
            rates,
            seconds,
            root,
            deadline,
            moving=args.moving_phones,
            steps=steps,
            local_port=local_port,
            server_log=stalls,
        )
        threads = ", ".join(f"{name} {cpu:.2f} s" for name, cpu in thread_cpu(pid)[:4])
        user, system = user_system_seconds(pid)
        print(
            f"  CPU over the whole run: user {user:.2f} s, system {system:.2f} s"
            f" (by thread: {threads})",
            flush=True,
        )
        return best


def _rates(text: str | None, default: Sequence[int]) -> list[int]:
    if not text:
        return list(default)
    return [int(part) for part in text.split(",") if part.strip()]


def _best(step: Step | None) -> str:
    if step is None:
        return "none (the first step failed)"
    cpu = f", server CPU {step.cpu:.0f} %" if step.cpu is not None else ""
    return (
        f"{step.rate}/s (achieved {step.achieved:.0f}/s, mean response {step.response_ms:.1f} ms"
        f"{cpu})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
