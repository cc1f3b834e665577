"""Load test of the call engine: the highest call rate sustained for 30 s, and memory per call.

    python -m loadtests.bench_calls [--rates 100,200,300,400,500] [--duration 30]
                                    [--hold-calls 2000] [--skip-baseline]

Loopback only, signalling only (INVITE without SDP):
- the carrier is SIPp (``tests/sipp/carrier_call.xml``) on 127.0.0.2, calling the tenant number
  0312345678, whose rule rings extension 1001;
- 1001 is a SIPp phone on 127.0.0.1 that registers with digest (``register.xml``) and then
  answers every call at once (``bench_uas.xml``: 180, 200, waits for the BYE);
- the baseline runs the very same two scenarios with the carrier calling the phone directly.

A rate passes when, over ``--duration`` seconds: no failed call on either side, every call
completed on both sides, retransmissions below 0.1 % of the messages sent, and the carrier's
INVITE-to-200 p99 below 100 ms (SIPp ``rtd``, every call traced). Rates are tried in order and
the run stops at the first one failing twice (the machine may be shared: each result line shows
the load average); the baseline starts at the server's best rate. A 5 s run at 50 calls/s warms
the server up first (lazy imports, first-call paths) and is not reported. The memory run holds
``--hold-calls`` established calls on a fresh server and prints (RSS after - RSS before) / calls.

Typical run: about 9 minutes (15 with ``--hold-calls 10000``). The server's CPU goes (py-spy,
400 calls/s, 63 % of a core) to the event loop and its system calls (~25 %), the call engine
(~30 %, routing ~7 % of it), parsing (~9 %), the transaction layer (~7 %) and sendto (~6 %); it
is one process on one core, next to both SIPps.

The server runs as ``pbx run`` (uvloop) with its normal JSON logging at info level.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from loadtests.before import checkout, describe
from loadtests.bench_register import cpu_seconds, stall_parts
from tests.integration.harness import (
    SIPP_DIR,
    RunningServer,
    free_port,
    running_server,
    sipp_binary,
    stop_process,
    write_config,
)

CARRIER_IP = "127.0.0.2"
PHONE_IP = "127.0.0.1"
NUMBER = "0312345678"
RETRANS_LIMIT = 0.001
P99_LIMIT_MS = 100.0

# Keep-alives off: SIPp's phone scenario has no place for an OPTIONS outside a call (it would
# count as a failed call); their cost is measured by bench_keepalive.
TENANT = """
[tenant]
domain = "acme.example"
default = true
qualify_seconds = 0

[limits]
max_users = 10

[[numbers]]
number = "0312345678"

[[users]]
extension = "1001"
password = "secret1001"
caller_id = "0312345678"

[[incoming]]
number = "0312345678"
targets = "1001"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]
start = "0:00"
end = "23:59:59"
"""

SERVER_EXTRA = """
[security]
max_requests_per_second = 1000000

[calls]
max_calls_per_user = 1000000
"""


# The server's RTP range, and the --before server's own (both keep ports bound between calls).
# Both lie below Linux's ephemeral ports (32768-60999): in 32000-35999, SIPp's and the driver's
# sockets took some of them, and every call met busy ports (issue #21, design 9.12).
RTP_PORTS = "24000-25999"
RTP_PORTS_BEFORE = "26000-27999"


@dataclass
class StepResult:
    rate: int
    calls: int
    uac_ok: int
    uac_failed: int
    uas_ok: int
    uas_failed: int
    retrans: int
    p50_ms: float
    p99_ms: float
    wall: float
    cpu_ms_per_call: float | None = None  # the server's CPU time over the step, per call
    rss_mib: int | None = None  # the server's resident memory at the step's end

    @property
    def retrans_ratio(self) -> float:
        return self.retrans / max(1, 6 * self.calls)

    @property
    def passed(self) -> bool:
        return (
            self.uac_failed == 0
            and self.uas_failed == 0
            and self.uac_ok == self.calls
            and self.uas_ok == self.calls
            and self.retrans_ratio < RETRANS_LIMIT
            and self.p99_ms < P99_LIMIT_MS
        )

    def row(self, label: str) -> str:
        verdict = "ok" if self.passed else "FAIL"
        cpu = f"{self.cpu_ms_per_call:.2f}" if self.cpu_ms_per_call is not None else "n/a"
        load = os.getloadavg()[0]
        return (
            f"{label:<8} {self.rate:>6} cps {self.calls:>7} calls  "
            f"uac ok/failed {self.uac_ok}/{self.uac_failed}  "
            f"uas ok/failed {self.uas_ok}/{self.uas_failed}  "
            f"retrans {100 * self.retrans_ratio:.3f} %  "
            f"INVITE->200 p50 {self.p50_ms:.1f} ms p99 {self.p99_ms:.1f} ms  "
            f"CPU {cpu} ms/call  "
            + (f"RSS {self.rss_mib} MiB  " if self.rss_mib is not None else "")
            + f"{verdict}  "
            f"(load avg {load:.2f})"
        )


def base_args(scenario: Path, target: tuple[str, int], local_ip: str, port: int) -> list[str]:
    return [
        sipp_binary(),
        f"{target[0]}:{target[1]}",
        "-sf",
        str(scenario),
        "-t",
        "u1",
        "-i",
        local_ip,
        "-p",
        str(port),
        "-nostdin",
        "-max_recv_loops",
        "10000",
        "-buff_size",
        "4194304",
    ]


def wait_bound(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return
                raise
        time.sleep(0.02)
    raise RuntimeError(f"nothing bound {host}:{port}")


def wait_free(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, port))
                return
            except OSError:
                pass
        time.sleep(0.02)
    raise RuntimeError(f"{host}:{port} still in use")


def register(server: RunningServer | tuple[str, int], port: int, workdir: Path) -> None:
    """1001 registers (digest) from ``PHONE_IP``:``port`` with the server or at an address."""
    target = server if isinstance(server, tuple) else server.udp
    args = [
        *base_args(SIPP_DIR / "register.xml", target, PHONE_IP, port),
        "-m",
        "1",
        "-s",
        "1001",
        "-au",
        "1001",
        "-ap",
        "secret1001",
        "-timeout",
        "15s",
        "-timeout_error",
    ]
    done = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"registration failed:\n{done.stdout}\n{done.stderr}")


def last_stats(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    header, last = rows[0], rows[-1]
    return dict(zip(header, last, strict=False))


def response_times(workdir: Path, prefix: str) -> list[float]:
    times: list[float] = []
    for path in workdir.glob(f"{prefix}*_rtt.csv"):
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                parts = line.strip().split(";")
                if len(parts) >= 2:
                    with contextlib.suppress(ValueError):
                        times.append(float(parts[1]))
    return sorted(times)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def run_step(
    rate: int,
    duration: int,
    target: tuple[str, int],
    phone_port: int,
    workdir: Path,
    label: str,
    server_pid: int | None = None,
    settle: int = 0,
) -> StepResult:
    """One rate for ``duration`` seconds: a fresh phone process and a fresh carrier; with
    ``server_pid``, the server's CPU time per call over the step.

    ``settle``: seconds at the same rate before the CPU is measured (the step then lasts
    ``settle + duration`` seconds and the pass criteria cover all of it). A call's transactions
    linger 32 s (timers J, L, M) and are cleaned up then; a window that starts after
    ``settle`` >= 32 s holds that clean-up of earlier calls at the rate calls are made: the
    steady state. Without it a step's own clean-ups fall after its window, and whether the
    clean-ups of an earlier step fall inside depends on the gaps between steps."""
    calls = rate * (settle + duration)
    step_dir = workdir / f"{label}-{rate}-{time.monotonic_ns()}"
    step_dir.mkdir()
    wait_free(PHONE_IP, phone_port)
    uas_args = [
        *base_args(SIPP_DIR / "bench_uas.xml", target, PHONE_IP, phone_port),
        "-s",
        "1001",
        "-m",
        str(calls),
        "-trace_stat",
        "-stf",
        str(step_dir / "uas.csv"),
        "-fd",
        "5",
        "-timeout",
        f"{settle + duration + 60}s",
    ]
    uac_args = [
        *base_args(SIPP_DIR / "carrier_call.xml", target, CARRIER_IP, free_port(host=CARRIER_IP)),
        "-s",
        NUMBER,
        "-r",
        str(rate),
        "-m",
        str(calls),
        "-l",
        "100000",
        "-d",
        "0",
        "-trace_stat",
        "-stf",
        str(step_dir / "uac.csv"),
        "-fd",
        "5",
        "-trace_rtt",
        "-rtt_freq",
        "1",
        "-timeout",
        f"{settle + duration + 60}s",
    ]
    uas = subprocess.Popen(
        uas_args, cwd=step_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    uac: subprocess.Popen[bytes] | None = None
    rss: int | None = None
    try:
        wait_bound(PHONE_IP, phone_port)
        started = time.monotonic()
        cpu_before = cpu_seconds(server_pid) if server_pid is not None else None
        uac = subprocess.Popen(
            uac_args, cwd=step_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if settle and server_pid is not None:
            # The measuring window opens ``settle`` seconds into the load (the carrier keeps
            # calling meanwhile; it ends long after).
            with contextlib.suppress(subprocess.TimeoutExpired):
                uac.wait(timeout=settle)
            cpu_before = cpu_seconds(server_pid)
        uac.wait(timeout=settle + duration + 90)
        wall = time.monotonic() - started
        try:
            uas.wait(timeout=15)
        except subprocess.TimeoutExpired:
            stop_process(uas)
        cpu_after = cpu_seconds(server_pid) if server_pid is not None else None
        rss = rss_kib(server_pid) // 1024 if server_pid is not None else None
    finally:
        if uac is not None:
            stop_process(uac)
        stop_process(uas)
    uac_stats = last_stats(step_dir / "uac.csv")
    uas_stats = last_stats(step_dir / "uas.csv")
    times = response_times(step_dir, "carrier_call")
    return StepResult(
        rate=rate,
        calls=calls,
        uac_ok=int(uac_stats.get("SuccessfulCall(C)", 0)),
        uac_failed=int(uac_stats.get("FailedCall(C)", 0)),
        uas_ok=int(uas_stats.get("SuccessfulCall(C)", 0)),
        uas_failed=int(uas_stats.get("FailedCall(C)", 0)),
        retrans=int(uac_stats.get("Retransmissions(C)", 0))
        + int(uas_stats.get("Retransmissions(C)", 0)),
        p50_ms=percentile(times, 0.50),
        p99_ms=percentile(times, 0.99),
        wall=wall,
        cpu_ms_per_call=(
            1000 * (cpu_after - cpu_before) / (rate * duration if settle else calls)
            if cpu_before is not None and cpu_after is not None
            else None
        ),
        rss_mib=rss,
    )


@contextlib.contextmanager
def bench_server(
    workdir: Path, source: Path | None = None, rtp_ports: str | None = None
) -> Iterator[tuple[RunningServer, int]]:
    """A fresh server (of the checkout ``source``, else of this one) with 1001 registered."""
    root = workdir / f"pbx-{time.monotonic_ns()}"
    root.mkdir()
    config = write_config(
        root,
        tenants={"acme": TENANT},
        server_extra=SERVER_EXTRA,
        trunk=f"{CARRIER_IP}:{free_port(host=CARRIER_IP)}",
        rtp_ports=rtp_ports or (RTP_PORTS_BEFORE if source is not None else RTP_PORTS),
    )
    with running_server(config, source=source) as server:
        phone_port = free_port(host=PHONE_IP)
        register(server, phone_port, workdir)
        yield server, phone_port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def hold_calls(count: int, workdir: Path, source: Path | None = None, label: str = "pbx") -> None:
    """Hold ``count`` established calls on a fresh server (of the checkout ``source``); print
    RSS per call. Every call holds two RTP port pairs (its relay, even without SDP: a late
    offer may come), so the range has four ports per call."""
    rate = 200
    ports = f"20000-{min(65535, 20000 + 4 * count + 1000)}"
    with bench_server(workdir, source, rtp_ports=ports) as (server, phone_port):
        step_dir = workdir / f"hold-{label}"
        step_dir.mkdir()
        before = rss_kib(server.process.pid)
        uas = subprocess.Popen(
            [
                *base_args(SIPP_DIR / "bench_uas.xml", server.udp, PHONE_IP, phone_port),
                "-s",
                "1001",
                "-timeout",
                "300s",
            ],
            cwd=step_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        uac: subprocess.Popen[bytes] | None = None
        try:
            wait_bound(PHONE_IP, phone_port)
            uac = subprocess.Popen(
                [
                    *base_args(
                        SIPP_DIR / "carrier_call.xml",
                        server.udp,
                        CARRIER_IP,
                        free_port(host=CARRIER_IP),
                    ),
                    "-s",
                    NUMBER,
                    "-r",
                    str(rate),
                    "-m",
                    str(count),
                    "-l",
                    "100000",
                    "-d",
                    "600000",
                    "-timeout",
                    "300s",
                ],
                cwd=step_dir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + count / rate + 60
            answered = 0
            while time.monotonic() < deadline:
                _, calls = server.admin_request("GET", "/calls")
                answered = sum(1 for c in calls if c["state"] == "answered")
                if answered >= count:
                    break
                time.sleep(1.0)
            # Let the 2xx retransmission state and transactions of the set-up settle (64*T1).
            time.sleep(33)
            after = rss_kib(server.process.pid)
            _, status = server.admin_request("GET", "/status")
            print(
                f"memory ({label}): {answered} established calls, "
                f"RSS {before} KiB -> {after} KiB, "
                f"{(after - before) / max(1, answered):.1f} KiB/call "
                f"(transactions still live: {status.get('transactions')})"
            )
        finally:
            if uac is not None:
                stop_process(uac)
            stop_process(uas)


def compare_cpu(
    rates: list[int], duration: int, rounds: int, before: str, workdir: Path, settle: int = 0
) -> list[tuple[int, list[StepResult], list[StepResult]]]:
    """CPU per call at fixed rates, this checkout against the commit ``before``: two servers
    side by side, the steps alternating between them (``rounds`` of each per rate), each
    measured after ``settle`` seconds at its rate (``run_step``)."""
    found: list[tuple[int, list[StepResult], list[StepResult]]] = []
    with (
        checkout(before) as source,
        bench_server(workdir, source) as (old, old_port),
        bench_server(workdir) as (new, new_port),
    ):
        run_step(50, 5, old.udp, old_port, workdir, "warmup-before")
        run_step(50, 5, new.udp, new_port, workdir, "warmup")
        for rate in rates:
            olds: list[StepResult] = []
            news: list[StepResult] = []
            for _ in range(rounds):
                seen = len(old.log_lines)
                pid = old.process.pid
                olds.append(
                    run_step(rate, duration, old.udp, old_port, workdir, "before", pid, settle)
                )
                print(olds[-1].row("before") + holds(old) + stalls(old, seen), flush=True)
                seen = len(new.log_lines)
                pid = new.process.pid
                news.append(
                    run_step(rate, duration, new.udp, new_port, workdir, "pbx", pid, settle)
                )
                print(news[-1].row("pbx") + holds(new) + stalls(new, seen), flush=True)
            found.append((rate, olds, news))
    return found


def holds(server: RunningServer) -> str:
    """What the server still holds at a step's end (``GET /status``): at a steady rate, about
    32 s of calls' transactions and dialogs (RFC 3261 timers J, L, M), not the whole step's."""
    _, status = server.admin_request("GET", "/status")
    return (
        f"  [holds {status.get('transactions')} transactions, {status.get('dialogs')} dialogs, "
        f"{status.get('calls_active')} calls]"
    )


def stalls(server: RunningServer, seen: int) -> str:
    """The server's full collections, event-loop lags, slow commits and busy RTP ports logged
    since line ``seen``."""
    parts = stall_parts(list(server.log_lines)[seen:])
    return f"  [{'; '.join(parts)}]" if parts else ""


def cpu_table(before: str, found: list[tuple[int, list[StepResult], list[StepResult]]]) -> str:
    def figure(results: list[StepResult]) -> str:
        cpu = [r.cpu_ms_per_call for r in results if r.cpu_ms_per_call is not None]
        p99 = max(r.p99_ms for r in results)
        ok = "ok" if all(r.passed for r in results) else "FAIL"
        return f"{min(cpu):.3f}-{max(cpu):.3f} ms (p99 <= {p99:.0f} ms, {ok})"

    lines = [f"server CPU per call, before = {describe(before)}:"]
    for rate, olds, news in found:
        old = statistics.median(r.cpu_ms_per_call or 0.0 for r in olds)
        new = statistics.median(r.cpu_ms_per_call or 0.0 for r in news)
        lines.append(
            f"  {rate:>5} cps  before {figure(olds)}  now {figure(news)}  "
            f"now/before {new / old:.2f}"
            if old
            else f"  {rate:>5} cps  n/a"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="200,400,600,800,1000,1200")
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--hold-calls", type=int, default=2000)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-hold", action="store_true")
    parser.add_argument("--skip-ladder", action="store_true", help="only the --before comparison")
    parser.add_argument(
        "--before", metavar="REV", help="compare CPU per call with this commit, in the same run"
    )
    parser.add_argument("--cpu-rates", default="500", help="the fixed rates of the comparison")
    parser.add_argument("--cpu-rounds", type=int, default=2, help="steps per server and rate")
    parser.add_argument(
        "--ladder-settle",
        type=int,
        default=0,
        help="seconds at each rate of the ladder before its --duration (the steady state; "
        "the pass criteria cover the whole step)",
    )
    parser.add_argument(
        "--cpu-settle",
        type=int,
        default=40,
        help="seconds at each rate before its CPU is measured (the steady state: calls' 32 s "
        "clean-ups inside the window); 0 measures from the first call",
    )
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-calls-") as tmp:
        workdir = Path(tmp)
        found = None
        if args.before:
            cpu_rates = [int(r) for r in args.cpu_rates.split(",")]
            found = compare_cpu(
                cpu_rates, args.duration, args.cpu_rounds, args.before, workdir, args.cpu_settle
            )
        if not args.skip_ladder:
            ladder(rates, args, workdir)
        if found is not None and args.before:
            print(cpu_table(args.before, found))
        if not args.skip_hold:
            if args.before:
                with checkout(args.before) as source:
                    hold_calls(args.hold_calls, workdir, source, label=args.before)
            hold_calls(args.hold_calls, workdir)
    return 0


def ladder(rates: list[int], args: argparse.Namespace, workdir: Path) -> None:
    """The highest rate sustained: the server's ladder, then SIPp to SIPp (the baseline)."""
    best_pbx = 0
    with bench_server(workdir) as (server, phone_port):
        run_step(50, 5, server.udp, phone_port, workdir, "warmup")
        settle = args.ladder_settle
        for rate in rates:
            pid = server.process.pid
            result = run_step(
                rate, args.duration, server.udp, phone_port, workdir, "pbx", pid, settle
            )
            print(result.row("pbx"), flush=True)
            if not result.passed:
                result = run_step(
                    rate, args.duration, server.udp, phone_port, workdir, "pbx-again", pid, settle
                )
                print(result.row("pbx"), flush=True)
            if not result.passed:
                break
            best_pbx = rate
    best_direct = 0
    if not args.skip_baseline:
        phone_port = free_port(host=PHONE_IP)
        # Below the server's best rate the baseline is not in question: start there.
        for rate in [r for r in rates if r >= best_pbx]:
            result = run_step(
                rate, args.duration, (PHONE_IP, phone_port), phone_port, workdir, "direct"
            )
            print(result.row("direct"), flush=True)
            if not result.passed:
                break
            best_direct = rate
    held = f"{args.duration} s" + (
        f" after {args.ladder_settle} s at the rate" if args.ladder_settle else ""
    )
    print(
        f"highest rate sustained {held}: pbx {best_pbx} cps, "
        f"SIPp to SIPp directly "
        f"{best_direct if not args.skip_baseline else 'n/a'} cps "
        f"(of the rates tried: {args.rates})"
    )


if __name__ == "__main__":
    sys.exit(main())
