"""The load-test suite: one fresh server, five SIPp load steps, a Markdown report with SVG plots.

    python -m loadtests.suite [--quick] [--out DIR] [--keep] [--only register,calls,...]

Loopback only. It writes a load configuration (3 tenants of 3,005 users each: 3,000 for the
registration storm, and per tenant the phones 1000 (calls), 1001 (recorded), 1003 (media), 1004
(soak) and 1002, never registered, which forwards to 1004 when offline; per tenant six numbers,
one to each of them and one to 009608), starts ``pbx run`` on it, registers each phone
extension of every tenant at its own port on 127.0.0.1 (one SIPp UAS per step, so that a failed
step's leftovers never reach the next step), and runs, with SIPp as the carrier (127.0.0.2):

1. ``register``: authenticated registration storm (REGISTER, 401, REGISTER with MD5 digest,
   200) over the 9,000 storm users; baseline: a SIPp UAS registrar (loadtests/bench_register.py);
2. ``calls``: signalling-only call storm (INVITE, 180, 200, ACK, BYE) to the three tenants;
3. ``media``: calls with SDP and RTP both ways (SIPp's ``rtp_stream``: 50 PCMA packets/s per
   direction) through the server's relay, held a few seconds;
4. ``recording``: the same calls to the recorded phones (the recordings are counted);
5. ``soak``: registrations refreshing, calls of varied length (a quarter forwarded from the
   offline 1002), announcement calls to 009608, for 10 minutes (1 with ``--quick``); then the
   server's RSS trend and what it still holds once the traffic stops (``/status``: transactions,
   calls, dialogs, RTP ports).

Steps 1-4 ramp the rate; a step passes when every call succeeded on both sides (zero failed),
fewer than 0.1 % of the messages were retransmissions and SIPp kept the rate. Each reports the
highest rate sustained for the step time (30 s; 5 s with ``--quick``), INVITE->180 and
INVITE->200 percentiles (SIPp ``-trace_rtt``, on SIPp's 1 ms clock) and their mean (to 0.01 ms),
and the server's CPU and RSS (/proc/<pid>). The same traffic SIPp to SIPp directly runs in the
same run, from the rate the server failed at and on by doubling until SIPp alone fails (its own
limit, within ``direct_budget``); the headline gives server/direct only when that limit was
reached, and says which side ran out first. The report
(report.md, results.json, *.svg, the server log) goes to ``loadtests/results/<timestamp>/``.

Every process is started here and ended by its pid (also on Ctrl-C). Full run: under 30 minutes
on a 2-core machine; ``--quick``: under 5.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import wave
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests import bench_register
from loadtests.bench_calls import base_args, last_stats, percentile, wait_bound, wait_free
from loadtests.svg import Series, line_chart
from tests.integration.harness import REPO, SIPP_DIR, free_port, sipp_binary, stop_process

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
RESULTS = Path(__file__).resolve().parent / "results"
CARRIER_IP = "127.0.0.2"
PHONE_IP = "127.0.0.1"
TENANTS = 3
STORM_USERS = 3000  # per tenant: extensions 2000-4999
# One phone extension per step (each a SIPp UAS on its own port), so that what a failed step
# leaves in the server (calls still ringing, retransmissions) never reaches the next step.
PHONE, RECORDED, FORWARDING, MEDIA_PHONE, SOAK_PHONE = "1000", "1001", "1002", "1003", "1004"
PLAIN, TO_RECORDED, FORWARDED, ANNOUNCEMENT, TO_MEDIA, TO_SOAK = range(6)
TARGETS = {
    PLAIN: PHONE,
    TO_RECORDED: RECORDED,
    FORWARDED: FORWARDING,  # offline: forwards to SOAK_PHONE
    ANNOUNCEMENT: "009608",
    TO_MEDIA: MEDIA_PHONE,
    TO_SOAK: SOAK_PHONE,
}
RETRANS_LIMIT = 0.001
LATE_FACTOR = 1.03
MEDIA_PORT = 42000  # SIPp's RTP ports start here (the server's relay uses 30000-39999)
START_TIMEOUT = 60.0


def number(tenant: int, kind: int) -> str:
    return f"03{tenant + 1}000000{kind}"


@dataclass(frozen=True)
class Profile:
    seconds: int
    register_rates: tuple[int, ...]
    register_direct: tuple[int, ...]
    call_rates: tuple[int, ...]
    call_direct: tuple[int, ...]
    media_rates: tuple[int, ...]
    media_direct: tuple[int, ...]
    recording_rates: tuple[int, ...]
    media_hold_ms: int
    soak_seconds: int
    soak_call_rate: int
    soak_hold_ms: tuple[int, int]  # uniform, min and max
    soak_register_rate: int
    budgets: dict[str, float]  # seconds per section
    direct_budget: float  # seconds for a section's baseline ramp (SIPp alone, to its limit)
    retries: int


QUICK = Profile(
    seconds=5,
    register_rates=(800, 1500),
    register_direct=(3000,),
    call_rates=(50, 150, 300),
    call_direct=(600,),
    media_rates=(10, 25, 50),
    media_direct=(100,),
    recording_rates=(10, 25),
    media_hold_ms=2000,
    soak_seconds=60,
    soak_call_rate=10,
    soak_hold_ms=(1000, 8000),
    soak_register_rate=20,
    budgets={"register": 30, "calls": 40, "media": 50, "recording": 35},
    direct_budget=45,
    retries=0,
)
FULL = Profile(
    seconds=30,
    register_rates=(250, 500, 1000, 1500, 2000, 2500),
    register_direct=(1000, 2000, 4000, 8000),
    call_rates=(20, 50, 100, 150, 200, 300, 400),
    call_direct=(200, 400, 800),
    media_rates=(10, 20, 40, 60, 80),
    media_direct=(60, 80, 120),
    recording_rates=(10, 20, 40, 60),
    media_hold_ms=10000,
    soak_seconds=600,
    soak_call_rate=20,
    soak_hold_ms=(2000, 30000),
    soak_register_rate=30,
    budgets={"register": 180, "calls": 220, "media": 240, "recording": 120},
    direct_budget=180,
    retries=1,
)


# --- processes --------------------------------------------------------------------------------

_RUNNING: list[subprocess.Popen[bytes]] = []


def spawn(args: list[str], cwd: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a process, remembered so that it is ended (by its pid) whatever happens."""
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    kwargs.setdefault("stderr", subprocess.DEVNULL)
    process = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, **kwargs)
    _RUNNING.append(process)
    return process


def end(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None:
        stop_process(process)
        with contextlib.suppress(ValueError):
            _RUNNING.remove(process)


def end_all() -> None:
    for process in list(_RUNNING):
        end(process)


def raise_open_files_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# --- configuration ----------------------------------------------------------------------------


def write_suite_config(
    root: Path, kernel_forwarding: bool = False
) -> tuple[Path, Path, dict[str, Path]]:
    """pbx.toml, three tenants; returns (config, storm users CSV, registration CSV by phone).
    ``kernel_forwarding``: the relay's kernel fast path (docs/design.md 9.15; needs root)."""
    (root / "tenants").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "pbx.toml").write_text(
        f"""
[sip]
listen = ["udp:{PHONE_IP}:0"]

[admin]
listen = "{PHONE_IP}:0"

[storage]
data_dir = "data"

[security]
# All the load comes from two addresses: lift the per-source defences.
max_requests_per_second = 1000000
ban_after_failures = 1000000

[calls]
max_calls_per_user = 1000000

[media]
rtp_ports = "30000-39999"
kernel_forwarding = {"true" if kernel_forwarding else "false"}

[[trunks]]
name = "carrier"
address = "{CARRIER_IP}:{free_port(host=CARRIER_IP)}"
""",
        encoding="utf-8",
    )
    storm = ["SEQUENTIAL"]
    phones: dict[str, list[str]] = {}
    all_days = '["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]'
    for t in range(TENANTS):
        domain = f"tenant{t}.example"
        # Keep-alives off, as in the other benchmarks: the SIPp phones take an OPTIONS for a
        # call of their own that fails (a failed call, and one call less of their -m count, so
        # the step's last INVITE went unanswered: 480 after 32 s).
        lines = bench_register.tenant_header(
            domain, default=t == 0, recording_users=10, qualify_seconds=0
        )
        for kind in TARGETS:
            lines += ["[[numbers]]", f'number = "{number(t, kind)}"', ""]
        specials = {
            PHONE: "",
            RECORDED: "recording = true",
            FORWARDING: f'forward = {{ offline = "{SOAK_PHONE}" }}',
            MEDIA_PHONE: "",
            SOAK_PHONE: "",
        }
        for extension, extra in specials.items():
            password = f"pw-{t}-{extension}"
            lines += ["[[users]]", f'extension = "{extension}"', f'password = "{password}"']
            lines += [extra, ""] if extra else [""]
            if extension != FORWARDING:
                phones.setdefault(extension, ["SEQUENTIAL"]).append(
                    f"{extension};{domain};"
                    f"[authentication username={extension} password={password}]"
                )
        for i in range(STORM_USERS):
            extension = f"{2000 + i:04d}"
            password = f"pw-{t}-{extension}"
            lines += ["[[users]]", f'extension = "{extension}"', f'password = "{password}"', ""]
            storm.append(
                f"{extension};{domain};[authentication username={extension} password={password}]"
            )
        for kind, target in TARGETS.items():
            lines += [
                "[[incoming]]",
                f'number = "{number(t, kind)}"',
                f'targets = "{target}"',
                f"days = {all_days}",
                'start = "0:00"',
                'end = "23:59:59"',
                "",
            ]
        (root / "tenants" / f"tenant{t}.toml").write_text("\n".join(lines), encoding="utf-8")
    (root / "storm.csv").write_text("\n".join(storm) + "\n", encoding="utf-8")
    csvs = {}
    for extension, rows in phones.items():
        csvs[extension] = root / f"phone-{extension}.csv"
        csvs[extension].write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root / "pbx.toml", root / "storm.csv", csvs


def numbers_csv(path: Path, kinds: list[int]) -> Path:
    """An injection file of numbers: every tenant in turn, the given kinds in order."""
    rows = ["SEQUENTIAL"] + [f"{number(t, k)};" for k in kinds for t in range(TENANTS)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def scenario(name: str, workdir: Path, audio: Path, replace: dict[str, str] | None = None) -> Path:
    """A scenario of loadtests/scenarios (or tests/sipp) with its placeholders filled in."""
    source = SCENARIOS / name if (SCENARIOS / name).exists() else SIPP_DIR / name
    text = source.read_text(encoding="utf-8").replace("@AUDIO@", str(audio))
    for old, new in (replace or {}).items():
        if old not in text:
            raise ValueError(f"{name}: no {old!r} to replace")
        text = text.replace(old, new)
    target = workdir / name
    target.write_text(text, encoding="utf-8")
    return target


def write_audio(path: Path) -> Path:
    """One second of a quiet 440 Hz tone as raw A-law (SIPp's rtp_stream loops it)."""
    data = bytearray()
    for i in range(8000):
        sample = int(40 * math.sin(2 * math.pi * 440 * i / 8000))
        data.append(0xD5 ^ (sample & 0x7F))
    path.write_bytes(bytes(data))
    return path


# --- the server -------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    udp: tuple[str, int]
    admin: tuple[str, int]
    data: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def get(self, path: str) -> Any:
        url = f"http://{self.admin[0]}:{self.admin[1]}{path}"
        with urllib.request.urlopen(url, timeout=15) as response:
            return json.loads(response.read())


@contextlib.contextmanager
def pbx_server(config: Path, log_path: Path) -> Iterator[Server]:
    """``pbx run`` (JSON log at info level to ``log_path``); yields once it has started."""
    with log_path.open("wb") as log_file:
        process = spawn(
            [sys.executable, "-m", "pbx", "run", "--config", str(config), "--log-json"],
            REPO,
            stderr=log_file,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        started = None
        while started is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pbx did not start; see {log_path}")
            time.sleep(0.2)
            with log_path.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if '"server_started"' in line:
                        started = json.loads(line)
                        break
        udp = next(e for e in started["sip"] if e["transport"] == "UDP")
        yield Server(
            process,
            (udp["host"], int(udp["port"])),
            (started["admin"]["host"], int(started["admin"]["port"])),
            config.parent / "data",
        )
    finally:
        end(process)


def register_phone(server: Server, phones: Path, workdir: Path) -> int:
    """Register a phone extension of every tenant at 127.0.0.1 on a fresh port (where the
    phone's SIPp UAS then runs); returns the port."""
    port = free_port(host=PHONE_IP)
    rows = len(phones.read_text().splitlines()) - 1
    args = [
        *base_args(SIPP_DIR / "register_load.xml", server.udp, PHONE_IP, port),
        *("-inf", str(phones), "-m", str(rows), "-r", "10", "-timeout", "30s", "-timeout_error"),
    ]
    done = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"the phones did not register:\n{done.stdout}\n{done.stderr}")
    return port


# --- results ----------------------------------------------------------------------------------


@dataclass
class StepRecord:
    section: str
    target: str  # "pbx" or "direct"
    rate: int
    planned: int
    ok: int
    failed: int  # failed on either side, or never completed
    retrans_pct: float
    seconds: float  # wall time of the step
    ring_ms: dict[str, float] = field(default_factory=dict)  # p50, p90, p99
    answer_ms: dict[str, float] = field(default_factory=dict)
    mean_ms: float = float("nan")  # registrations: SIPp's mean REGISTER->200 exchange
    cpu_pct: float | None = None  # the measured process (the server, or SIPp's UAS)
    rss_mib: float | None = None
    note: str = ""
    passed: bool = False

    def line(self) -> str:
        cpu = f"{self.cpu_pct:4.0f} %" if self.cpu_pct is not None else "   - "
        latency = (
            f"180 p50/p99 {ms(self.ring_ms.get('p50'))}/{ms(self.ring_ms.get('p99'))} ms  "
            f"200 p50/p99 {ms(self.answer_ms.get('p50'))}/{ms(self.answer_ms.get('p99'))} ms "
            f"(mean {ms(self.answer_ms.get('mean'))})"
            if self.answer_ms
            else f"mean {ms(self.mean_ms)} ms"
        )
        return (
            f"  {self.section:9} {self.target:6} {self.rate:5d}/s  ok {self.ok}/{self.planned}"
            f"  failed {self.failed}  retrans {self.retrans_pct:.3f} %  {latency}"
            f"  cpu {cpu}  {'pass' if self.passed else 'FAIL'}{self.note}"
            f"  (load {os.getloadavg()[0]:.2f})"
        )


def _percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99 and the mean. SIPp times each exchange on a 1 ms clock, so a percentile is
    whole ms; the mean of many such samples resolves below a millisecond (the clock's phase is
    independent of the exchange)."""
    if not values:
        return {}
    figures = {f"p{q}": percentile(values, q / 100) for q in (50, 90, 99)}
    figures["mean"] = sum(values) / len(values)
    return figures


def rtt_samples(step_dir: Path) -> dict[str, list[float]]:
    """SIPp -trace_rtt files: response times (ms) by rtd name."""
    samples: dict[str, list[float]] = {}
    for path in step_dir.glob("*_rtt.csv"):
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.strip().split(";")
                if len(parts) >= 3:
                    with contextlib.suppress(ValueError):
                        samples.setdefault(parts[2], []).append(float(parts[1]))
    return {name: sorted(values) for name, values in samples.items()}


# --- steps ------------------------------------------------------------------------------------


def register_step(
    section: str,
    label: str,
    target: int,
    pid: int,
    users: Path,
    rate: int,
    seconds: int,
    wd: Path,
    local_port: int | None = None,
) -> StepRecord:
    """One storm step; ``local_port``: the phones' address, kept through the ladder so that a
    step refreshes the bindings of the one before (as bench_register does)."""
    step = bench_register.run_step(target, users, rate, seconds, wd, pid, local_port)
    rss = rss_kib(pid)
    return StepRecord(
        section=section,
        target=label,
        rate=rate,
        planned=step.planned,
        ok=step.succeeded,
        failed=step.failed + max(0, step.planned - step.succeeded - step.failed),
        retrans_pct=100 * step.retransmission_ratio,
        seconds=step.elapsed,
        mean_ms=step.response_ms,
        cpu_pct=step.cpu,
        rss_mib=rss / 1024 if rss else None,
        passed=step.passed,
    )


@dataclass
class CallKind:
    carrier: Path  # scenario
    phone: Path
    numbers: Path
    hold_ms: int
    media: bool
    extension: str  # the phone's


def call_step(
    section: str,
    label: str,
    kind: CallKind,
    rate: int,
    seconds: int,
    target: tuple[str, int],
    phone_port: int,
    workdir: Path,
    server: Server | None,
    check: Callable[[int], str] | None = None,
) -> StepRecord:
    """``rate`` calls/s for ``seconds`` from the carrier SIPp to ``target``, answered by a fresh
    phone SIPp on ``phone_port``. ``check(calls)`` may add a failure note (recordings)."""
    calls = rate * seconds
    step_dir = workdir / f"{section}-{label}-{rate}-{time.monotonic_ns()}"
    step_dir.mkdir()
    wait_free(PHONE_IP, phone_port)
    media = ["-mi", PHONE_IP, "-mp", str(MEDIA_PORT)] if kind.media else []
    timeout = seconds + kind.hold_ms // 1000 + 60
    phone_args = [
        *base_args(kind.phone, target, PHONE_IP, phone_port),
        *("-s", PHONE, "-m", str(calls), *media),
        *("-trace_stat", "-stf", str(step_dir / "uas.csv"), "-fd", "1", "-trace_err"),
        *("-timeout", f"{timeout}s"),
    ]
    carrier_media = ["-mi", CARRIER_IP, "-mp", str(MEDIA_PORT)] if kind.media else []
    carrier_args = [
        *base_args(kind.carrier, target, CARRIER_IP, free_port(host=CARRIER_IP)),
        *("-inf", str(kind.numbers), "-r", str(rate), "-m", str(calls), *carrier_media),
        *("-l", "100000", "-d", str(kind.hold_ms)),
        *("-trace_stat", "-stf", str(step_dir / "uac.csv"), "-fd", "1"),
        *("-trace_rtt", "-rtt_freq", "1", "-trace_err", "-timeout", f"{timeout}s"),
    ]
    measured = server.pid if server is not None else None
    phone = spawn(phone_args, step_dir)
    carrier = None
    try:
        wait_bound(PHONE_IP, phone_port)
        if measured is None:
            measured = phone.pid
        cpu_before = bench_register.cpu_seconds(measured)
        started = time.monotonic()
        carrier = spawn(carrier_args, step_dir)
        carrier.wait(timeout=timeout + 30)
        wall = time.monotonic() - started
        cpu_after = bench_register.cpu_seconds(measured)
        with contextlib.suppress(subprocess.TimeoutExpired):
            phone.wait(timeout=10)
        rss = rss_kib(measured)
    finally:
        end(carrier)
        end(phone)
    uac, uas = last_stats(step_dir / "uac.csv"), last_stats(step_dir / "uas.csv")
    uac_ok, uas_ok = int(uac.get("SuccessfulCall(C)", 0)), int(uas.get("SuccessfulCall(C)", 0))
    failed = max(
        int(uac.get("FailedCall(C)", 0)) + int(uas.get("FailedCall(C)", 0)),
        calls - min(uac_ok, uas_ok),
    )
    retrans = int(uac.get("Retransmissions(C)", 0)) + int(uas.get("Retransmissions(C)", 0))
    times = rtt_samples(step_dir)
    cpu = None
    if cpu_before is not None and cpu_after is not None:
        cpu = 100 * (cpu_after - cpu_before) / wall
    record = StepRecord(
        section=section,
        target=label,
        rate=rate,
        planned=calls,
        ok=min(uac_ok, uas_ok),
        failed=failed,
        retrans_pct=100 * retrans / max(1, 6 * calls),
        seconds=wall,
        ring_ms=_percentiles(times.get("ring", [])),
        answer_ms=_percentiles(times.get("answer", [])),
        cpu_pct=cpu,
        rss_mib=rss / 1024 if rss else None,
    )
    late = wall > seconds * LATE_FACTOR + kind.hold_ms / 1000 + 5
    if late:
        record.note += f" (late: {wall:.0f} s)"
    if check is not None:
        record.note += check(calls)
    record.passed = (
        record.failed == 0
        and record.ok == calls
        and record.retrans_pct < 100 * RETRANS_LIMIT
        and not late
        and "missing" not in record.note
    )
    if record.passed:
        shutil.rmtree(step_dir, ignore_errors=True)
    return record


def climb(
    run: Callable[[int], StepRecord],
    rates: tuple[int, ...],
    seconds: int,
    deadline: float,
    retries: int,
) -> list[StepRecord]:
    """Step up through ``rates`` until one fails (after ``retries``) or time runs out."""
    records: list[StepRecord] = []
    for rate in rates:
        for attempt in range(1 + retries):
            if time.monotonic() + seconds * 1.5 + 10 > deadline:
                print(f"  time budget reached before {rate}/s", flush=True)
                return records
            record = run(rate)
            if attempt:
                record.note += " (retry)"
            print(record.line(), flush=True)
            records.append(record)
            if record.passed:
                break
        if not records[-1].passed:
            break
    return records


def settle(server: Server, records: list[StepRecord], limit: float = 35.0) -> None:
    """After a failed step the server still has calls (ringing, retransmitting to the phone's
    port): wait until it has none, so that they do not reach the next step's phone."""
    if not records or records[-1].passed:
        return
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if server.get("/status").get("calls_active", 0) == 0:
                return
        time.sleep(1.0)


def best(records: list[StepRecord], target: str) -> StepRecord | None:
    held = [r for r in records if r.target == target and r.passed]
    return max(held, key=lambda r: r.rate) if held else None


def first_failure(records: list[StepRecord], target: str) -> StepRecord | None:
    """The lowest rate ``target`` failed at above its best (where it ran out), if any."""
    top = best(records, target)
    floor = top.rate if top is not None else 0
    failed = [r for r in records if r.target == target and not r.passed and r.rate > floor]
    return min(failed, key=lambda r: r.rate) if failed else None


DIRECT_DOUBLINGS = 6  # past the profile's direct rates, the baseline ramps on by doubling


def direct_rates(rates: tuple[int, ...], pbx_records: list[StepRecord]) -> tuple[int, ...]:
    """The baseline's ramp: from the rate the server failed at (does SIPp alone hold it? then
    the server ran out first) or, when it never failed, above its best; then the profile's
    higher rates and ``DIRECT_DOUBLINGS`` doublings, until SIPp itself fails: its own limit."""
    pbx_best = best(pbx_records, "pbx")
    failed = first_failure(pbx_records, "pbx")
    floor = pbx_best.rate if pbx_best is not None else 0
    chosen = {r for r in rates if r > floor}
    if failed is not None:
        chosen = {r for r in chosen if r >= failed.rate} | {failed.rate}
    ramp = sorted(chosen) or list(rates[-1:])
    for _ in range(DIRECT_DOUBLINGS):
        ramp.append(ramp[-1] * 2)
    return tuple(ramp)


# --- the soak ---------------------------------------------------------------------------------


class Sampler:
    """Samples the server's CPU time and RSS every second (a thread)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float, int]] = []  # (monotonic, cpu seconds, RSS KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            cpu, rss = bench_register.cpu_seconds(self.pid), rss_kib(self.pid)
            if cpu is not None and rss is not None:
                self.samples.append((time.monotonic(), cpu, rss))
            self._stop.wait(1.0)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares: (slope, intercept)."""
    n = len(points)
    if n < 2:
        return 0.0, points[0][1] if points else 0.0
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points) or 1.0
    slope = sum((p[0] - mx) * (p[1] - my) for p in points) / sxx
    return slope, my - slope * mx


def soak(
    server: Server,
    prof: Profile,
    phone_port: int,
    storm: Path,
    workdir: Path,
    audio: Path,
    call_rate: int,
) -> dict[str, Any]:
    """Mixed traffic for ``prof.soak_seconds``, then wait for the server to let go of it all."""
    seconds = prof.soak_seconds
    low, high = prof.soak_hold_ms
    soak_dir = workdir / "soak"
    soak_dir.mkdir()
    carrier_sf = scenario(
        "carrier_calls.xml",
        soak_dir,
        audio,
        {"<pause/>": f'<pause distribution="uniform" min="{low}" max="{high}"/>'},
    )
    phone_sf = scenario("phone_answer.xml", soak_dir, audio)
    announcement_sf = scenario(
        "carrier_announcement.xml", soak_dir, audio, {"m=audio 21[0-9][0-9][0-9]": "m=audio [0-9]+"}
    )
    # Three plain calls for each forwarded one (1002 is offline and forwards to 1000).
    numbers = numbers_csv(soak_dir / "numbers.csv", [TO_SOAK, TO_SOAK, FORWARDED, TO_SOAK])
    calls = call_rate * seconds
    announcements = seconds // 2  # one call every 2 s, each hears the 12 s prompt
    registrations = prof.soak_register_rate * seconds
    timeout = f"{seconds + high // 1000 + 60}s"
    wait_free(PHONE_IP, phone_port)
    phone = spawn(
        [
            *base_args(phone_sf, server.udp, PHONE_IP, phone_port),
            *("-s", PHONE, "-m", str(calls), "-timeout", timeout),
            *("-trace_stat", "-stf", str(soak_dir / "phone.csv"), "-fd", "1"),
        ],
        soak_dir,
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stats: dict[str, dict[str, str]] = {}
    status_samples: list[tuple[float, dict[str, Any]]] = []
    try:
        wait_bound(PHONE_IP, phone_port)
        with Sampler(server.pid) as sampler:
            began = time.monotonic()
            procs["calls"] = spawn(
                [
                    *base_args(carrier_sf, server.udp, CARRIER_IP, free_port(host=CARRIER_IP)),
                    *("-inf", str(numbers), "-r", str(call_rate), "-m", str(calls)),
                    *("-l", "100000", "-timeout", timeout),
                    *("-trace_stat", "-stf", str(soak_dir / "calls.csv"), "-fd", "1"),
                ],
                soak_dir,
            )
            procs["announcements"] = spawn(
                [
                    *base_args(announcement_sf, server.udp, CARRIER_IP, free_port(host=CARRIER_IP)),
                    *("-s", number(0, ANNOUNCEMENT), "-set", "rtp_port", "45000"),
                    *("-r", "1", "-rp", "2000", "-m", str(announcements), "-l", "1000"),
                    *("-timeout", timeout),
                    *("-trace_stat", "-stf", str(soak_dir / "announcements.csv"), "-fd", "1"),
                ],
                soak_dir,
            )
            procs["registrations"] = spawn(
                [
                    *base_args(SIPP_DIR / "register_load.xml", server.udp, PHONE_IP, free_port()),
                    *("-inf", str(storm), "-r", str(prof.soak_register_rate)),
                    *("-m", str(registrations), "-l", "10000", "-timeout", timeout),
                    *("-trace_stat", "-stf", str(soak_dir / "registrations.csv"), "-fd", "1"),
                ],
                soak_dir,
            )
            limit = began + seconds + high / 1000 + 90
            next_status = began
            while any(p.poll() is None for p in procs.values()) and time.monotonic() < limit:
                if time.monotonic() >= next_status:
                    with contextlib.suppress(OSError, ValueError):
                        status_samples.append((time.monotonic() - began, server.get("/status")))
                    next_status += 5
                time.sleep(0.5)
            traffic_end = time.monotonic()
        with contextlib.suppress(subprocess.TimeoutExpired):
            phone.wait(timeout=10)
    finally:
        for process in procs.values():
            end(process)
        end(phone)
    for name in (*procs, "phone"):
        with contextlib.suppress(OSError, IndexError):
            stats[name] = last_stats(soak_dir / f"{name}.csv")
    # What the server still holds once the traffic has stopped (transactions: 64*T1 = 32 s,
    # dialogs are forgotten 32 s after a call ends): poll until all is zero, 90 s at most.
    keys = ("transactions", "calls_active", "dialogs", "rtp_ports_in_use")
    drained_after = None
    held: dict[str, Any] = {}
    held_first: dict[str, Any] | None = None
    stop_at = time.monotonic() + 90
    while time.monotonic() < stop_at:
        status = server.get("/status")
        held = {k: status.get(k, "n/a") for k in keys}
        if held_first is None:
            held_first = held
        if all(v == 0 for v in held.values()):
            drained_after = time.monotonic() - traffic_end
            break
        time.sleep(2)
    # Memory: RSS after the warm-up (the first fifth, at least until the first calls' dialogs
    # and transactions are forgotten, 32 s after the longest call, at most half the soak)
    # against the end of the traffic; the trend is a line fitted over the second half.
    samples = [(t - began, cpu, rss) for t, cpu, rss in sampler.samples if t <= traffic_end]
    warmup = min(max(seconds / 5, 32 + high / 1000 + 5), seconds / 2)
    after_warmup = next((rss for t, _, rss in samples if t >= warmup), samples[-1][2])
    rss_end = samples[-1][2]
    half = [(t, float(rss)) for t, _, rss in samples if t >= seconds / 2]
    slope, intercept = fit_line(half)  # KiB per second
    rise = slope * (half[-1][0] - half[0][0]) if len(half) > 1 else 0.0
    cpu = 100 * (samples[-1][1] - samples[0][1]) / max(1e-9, samples[-1][0] - samples[0][0])
    sent = {name: int(s.get("SuccessfulCall(C)", 0)) for name, s in stats.items()}
    failed = {name: int(s.get("FailedCall(C)", 0)) for name, s in stats.items()}
    retrans = {name: int(s.get("Retransmissions(C)", 0)) for name, s in stats.items()}
    planned = {"calls": calls, "announcements": announcements, "registrations": registrations}
    memory_flat = abs(rss_end - after_warmup) <= 0.10 * after_warmup and rise < 0.02 * rss_end
    # Before the state retained 32 s after each call has levelled off, RSS grows by design:
    # a soak shorter than twice that (the quick one) cannot tell flat from leaking.
    conclusive = seconds >= 2 * (32 + high / 1000 + 5)
    return {
        "seconds": seconds,
        "call_rate": call_rate,
        "hold_ms": [low, high],
        "planned": planned,
        "succeeded": sent,
        "failed": failed,
        "retransmissions": retrans,
        "server_cpu_pct": cpu,
        "rss_after_warmup_kib": after_warmup,
        "rss_end_kib": rss_end,
        "warmup_seconds": warmup,
        "second_half_slope_kib_per_min": slope * 60,
        "second_half_rise_kib": rise,
        "fit": [slope, intercept],
        "memory_flat": memory_flat,
        "memory_conclusive": conclusive,
        "held_after_traffic": held,
        "held_at_traffic_end": held_first or held,
        "drained_after_seconds": drained_after,
        "no_leaks": drained_after is not None,
        "rss_samples": [(t, rss) for t, _, rss in samples],
        "status_samples": [
            (t, {k: s.get(k) for k in (*keys, "registrations")}) for t, s in status_samples
        ],
        "traffic_ok": all(failed.get(n, 1) == 0 for n in planned)
        and all(sent.get(n, 0) == planned[n] for n in planned),
    }


# --- the report -------------------------------------------------------------------------------

TITLES = {
    "register": "Authenticated registration storm (registrations/s)",
    "calls": "Signalling-only calls (calls/s)",
    "media": "Calls with RTP through the relay (calls/s)",
    "recording": "Calls with RTP, recorded (calls/s)",
}


def ran_out_first(
    pbx_failed: StepRecord | None, direct: StepRecord | None, direct_failed: StepRecord | None
) -> str:
    """Which side reached its limit first: the server, or the harness (SIPp alone)."""
    if pbx_failed is None:
        return "neither: the server held every rate tried (the ramp or its time budget ended)"
    if direct is not None and direct.rate >= pbx_failed.rate:
        return f"the server (failed at {pbx_failed.rate}/s, which SIPp alone held)"
    if direct_failed is not None and direct_failed.rate <= pbx_failed.rate:
        return f"the harness (SIPp alone failed at {direct_failed.rate}/s too)"
    return f"unknown (the server failed at {pbx_failed.rate}/s; no baseline at that rate)"


def headline(section: str, records: list[StepRecord]) -> dict[str, Any]:
    """The highest rate each side held, the baseline's own limit, and who ran out first.

    The ratio is server/direct only when the direct ramp reached a failing rate (its limit);
    when SIPp alone held every rate tried, its limit is unknown and no ratio is given."""
    pbx, direct = best(records, "pbx"), best(records, "direct")
    pbx_failed, direct_failed = first_failure(records, "pbx"), first_failure(records, "direct")
    tried_direct = [r for r in records if r.target == "direct"]
    direct_capped = bool(tried_direct) and direct_failed is None
    ratio = pbx.rate / direct.rate if pbx and direct and not direct_capped else None
    return {
        "section": section,
        "pbx_rate": pbx.rate if pbx else 0,
        "pbx_failed_at": pbx_failed.rate if pbx_failed else None,
        "direct_rate": direct.rate if direct else None,
        "direct_failed_at": direct_failed.rate if direct_failed else None,
        "direct_limit_higher": direct_capped,
        "ratio": ratio,
        "ran_out_first": ran_out_first(pbx_failed, direct, direct_failed)
        if tried_direct
        else "no baseline",
        "pbx_cpu_pct": pbx.cpu_pct if pbx else None,
        "pbx_rss_mib": pbx.rss_mib if pbx else None,
        "pbx_answer_ms": pbx.answer_ms if pbx else {},
        "pbx_ring_ms": pbx.ring_ms if pbx else {},
        "pbx_mean_ms": pbx.mean_ms if pbx else None,
    }


def headline_line(h: dict[str, Any]) -> str:
    step, pbx, direct, ratio, first, latency, cpu = headline_cells(h)
    return (
        f"{step:9} pbx {pbx} | direct {direct} | ratio {ratio} | ran out first: {first} | "
        f"{latency} | server CPU {cpu}"
    )


def ms(value: float | None) -> str:
    """A latency in ms: sub-millisecond figures keep two decimals; a whole-ms 0 from SIPp's
    1 ms clock reads "< 1"."""
    if value is None or math.isnan(value):
        return "-"
    if value == 0:
        return "< 1"
    if float(value).is_integer() or value >= 10:
        return f"{value:.0f}"
    return f"{value:.2f}"


def headline_cells(h: dict[str, Any]) -> tuple[str, str, str, str, str, str, str]:
    unit = "reg/s" if h["section"] == "register" else "calls/s"
    if h["direct_rate"] is None:
        direct = "n/a" if h.get("direct_failed_at") is None else "none held"
    elif h["direct_limit_higher"]:
        direct = f">= {h['direct_rate']} (every rate tried held: not its limit)"
    else:
        direct = f"{h['direct_rate']} (its limit: failed at {h['direct_failed_at']})"
    if h["ratio"] is not None:
        ratio = f"{100 * h['ratio']:.0f} %"
    elif h["direct_limit_higher"]:
        ratio = "not given (baseline not at its limit)"
    else:
        ratio = "n/a"
    cpu = f"{h['pbx_cpu_pct']:.0f} %" if h["pbx_cpu_pct"] is not None else "-"
    if h["pbx_answer_ms"]:
        ring, answer = h["pbx_ring_ms"], h["pbx_answer_ms"]
        latency = (
            f"INVITE->180 p99 {ms(ring.get('p99'))} ms, "
            f"INVITE->200 p50/p99 {ms(answer.get('p50'))}/{ms(answer.get('p99'))} ms, "
            f"mean {ms(answer.get('mean'))} ms"
        )
    else:
        latency = f"mean exchange {ms(h['pbx_mean_ms'])} ms"
    first = str(h.get("ran_out_first", "-"))
    return h["section"], f"{h['pbx_rate']} {unit}", direct, ratio, first, latency, cpu


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def plots(out: Path, section: str, records: list[StepRecord]) -> list[str]:
    names = []
    series = [
        Series(target, [(r.rate, r.failed) for r in records if r.target == target])
        for target in ("pbx", "direct")
    ]
    name = f"{section}_failures.svg"
    unit = "offered rate (registrations/s)" if section == "register" else "offered rate (calls/s)"
    failed = "failed (registrations)" if section == "register" else "failed (calls)"
    line_chart(out / name, f"{section}: rate vs failures", unit, failed, series)
    names.append(name)
    latency: list[Series] = []
    for target in ("pbx", "direct"):
        rows = [r for r in records if r.target == target]
        dashed = target == "direct"
        if section == "register":
            latency.append(Series(f"{target} mean", [(r.rate, r.mean_ms) for r in rows], dashed))
            continue
        for key in ("p50", "p99"):
            points = [(r.rate, r.answer_ms.get(key, math.nan)) for r in rows]
            latency.append(Series(f"{target} 200 {key}", points, dashed))
    name = f"{section}_latency.svg"
    y_label = "REGISTER exchange, mean (ms)" if section == "register" else "INVITE->200 (ms)"
    line_chart(out / name, f"{section}: rate vs latency", unit, y_label, latency)
    names.append(name)
    return names


def write_report(
    out: Path,
    prof: Profile,
    quick: bool,
    sections: dict[str, list[StepRecord]],
    soak_result: dict[str, Any] | None,
    heads: list[dict[str, Any]],
    started: datetime,
    elapsed: float,
    errors: list[str],
) -> Path:
    lines = [
        f"# pbx load-test report ({'quick' if quick else 'full'})",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC, {elapsed / 60:.1f} minutes",
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}, {_sipp_version()}",
        f"- load average at the end: {os.getloadavg()[0]:.2f} (the machine may be shared)",
        f"- {TENANTS} tenants, {TENANTS * (STORM_USERS + 5)} users; SIPp carrier on "
        f"{CARRIER_IP}, phones on {PHONE_IP}; UDP; server `pbx run` (uvloop, JSON log at info)",
        f"- a step: {prof.seconds} s at a fixed rate; it passes with zero failed calls on both "
        "sides, < 0.1 % retransmissions, and the rate kept. `direct` = the same SIPp traffic "
        "SIPp to SIPp, without the server, ramped from the rate the server failed at until SIPp "
        "itself fails (its own limit); `>=` and no ratio when every direct rate tried held",
        "- latencies: SIPp -trace_rtt, timed from the INVITE on SIPp's 1 ms clock: percentiles "
        "are whole milliseconds (`< 1` = under 1 ms), the mean of the samples resolves to "
        "0.01 ms; registration exchanges: SIPp's mean (microseconds)",
        "",
        "## Headline",
        "",
        "| step | pbx | direct (SIPp alone) | pbx / direct | ran out first "
        "| latency at pbx best | server CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for h in heads:
        lines.append("| " + " | ".join(headline_cells(h)) + " |")
    if soak_result is not None:
        lines += ["", soak_summary(soak_result)]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in errors]
    for section, records in sections.items():
        lines += ["", f"## {TITLES[section]}", ""]
        lines += [
            "| target | rate | ok/planned | failed | retrans % | 180 p50/p90/p99 ms "
            "| 200 p50/p90/p99 ms | mean ms (200, or exchange) | CPU % | RSS MiB | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in records:
            ring = "/".join(ms(r.ring_ms.get(k)) for k in ("p50", "p90", "p99"))
            answer = "/".join(ms(r.answer_ms.get(k)) for k in ("p50", "p90", "p99"))
            mean = r.answer_ms.get("mean") if r.answer_ms else r.mean_ms
            lines.append(
                f"| {r.target} | {r.rate} | {r.ok}/{r.planned} | {r.failed} | "
                f"{r.retrans_pct:.3f} | {ring if r.ring_ms else '-'} | "
                f"{answer if r.answer_ms else '-'} | {ms(mean)} | {_fmt(r.cpu_pct)} | "
                f"{_fmt(r.rss_mib, 1)} | {'pass' if r.passed else 'FAIL'}{r.note} |"
            )
        if section in ("media", "recording"):
            lines += [
                "",
                "",
                "RTP: 50 PCMA packets/s each way per call (SIPp rtp_stream), held "
                f"{prof.media_hold_ms / 1000:g} s; RTP loss is not measured here "
                "(loadtests/bench_relay.py measures the relay's loss and latency).",
            ]
        if section == "recording":
            lines += ["", "No direct baseline: recording happens in the server (see media)."]
        if section == "calls":
            lines += ["", "CPU % of `direct` rows: the phone SIPp's."]
        lines += ["", f"![failures]({section}_failures.svg) ![latency]({section}_latency.svg)"]
    if soak_result is not None:
        s = soak_result
        lines += [
            "",
            "## Soak",
            "",
            f"{s['seconds']} s: carrier calls at {s['call_rate']}/s held "
            f"{s['hold_ms'][0] / 1000:g}-{s['hold_ms'][1] / 1000:g} s (uniform; one in four "
            f"to 1002, offline, forwarded to {SOAK_PHONE}), one call to 009608 every 2 s "
            f"(hears the 12 s announcement, the server hangs up), registrations refreshing at "
            f"{prof.soak_register_rate}/s.",
            "",
            "| traffic | planned | succeeded | failed | retransmissions |",
            "|---|---|---|---|---|",
        ]
        for name, planned in s["planned"].items():
            lines.append(
                f"| {name} | {planned} | {s['succeeded'].get(name, '-')} | "
                f"{s['failed'].get(name, '-')} | {s['retransmissions'].get(name, '-')} |"
            )
        lines += [
            "",
            f"- server CPU over the soak: {s['server_cpu_pct']:.0f} % of one core",
            f"- RSS after warm-up ({s['warmup_seconds']:.0f} s) "
            f"{s['rss_after_warmup_kib'] / 1024:.1f} MiB, at the end "
            f"{s['rss_end_kib'] / 1024:.1f} MiB; second-half trend "
            f"{s['second_half_slope_kib_per_min']:+.0f} KiB/min "
            f"({s['second_half_rise_kib'] / 1024:+.2f} MiB over the second half): "
            f"{memory_verdict(s)}",
            "",
            *soak_state_table(s),
            "",
            "![memory](soak_memory.svg) ![state](soak_state.svg)",
        ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def memory_verdict(s: dict[str, Any]) -> str:
    if not s["traffic_ok"]:
        # An overloaded server's RSS holds its backlog: neither flat nor a leak can be read.
        return "not judged (the traffic failed)"
    if not s["memory_conclusive"]:
        return "inconclusive (soak too short to level off)"
    return "flat" if s["memory_flat"] else "NOT flat"


def held_words(held: dict[str, Any]) -> str:
    """``{"calls_active": 0, ...}`` as ``calls_active 0, ...`` (no Python dict in a report)."""
    return ", ".join(f"{name} {value}" for name, value in held.items()) or "-"


def soak_state_table(s: dict[str, Any]) -> list[str]:
    """What the server held (``/status``) when the traffic stopped and at the last poll."""
    first = s.get("held_at_traffic_end") or s["held_after_traffic"]
    last = s["held_after_traffic"]
    after = (
        f"{s['drained_after_seconds']:.0f} s after the last call (all zero)"
        if s["no_leaks"]
        else "90 s after the last call (NOT all zero)"
    )
    lines = [f"| held by the server (`/status`) | when the traffic stopped | {after} |"]
    lines.append("|---|---|---|")
    for name in last:
        lines.append(f"| {name} | {first.get(name, '-')} | {last[name]} |")
    return lines


def soak_summary(s: dict[str, Any]) -> str:
    return (
        f"Soak {s['seconds']} s: traffic {'ok' if s['traffic_ok'] else 'FAILED'}, memory "
        f"{memory_verdict(s)} (RSS {s['rss_after_warmup_kib'] / 1024:.1f}"
        f" -> {s['rss_end_kib'] / 1024:.1f} MiB, second half "
        f"{s['second_half_slope_kib_per_min']:+.0f} KiB/min), "
        f"{'no leaks' if s['no_leaks'] else ('LEAK' if s['traffic_ok'] else 'still held')}"
        " after the traffic "
        f"({held_words(s['held_after_traffic'])}), server CPU {s['server_cpu_pct']:.0f} %"
    )


def soak_plots(out: Path, s: dict[str, Any]) -> None:
    rss = [(t, kib / 1024) for t, kib in s["rss_samples"]]
    slope, intercept = s["fit"]
    half = [t for t, _ in rss if t >= s["seconds"] / 2]
    fit = [(t, (slope * t + intercept) / 1024) for t in (half[0], half[-1])] if half else []
    line_chart(
        out / "soak_memory.svg",
        "soak: server RSS",
        "time since the soak began (s)",
        "RSS (MiB)",
        [Series("RSS", rss), Series("fit, 2nd half", fit, dashed=True)],
        y_min=None,
    )
    keys = ("calls_active", "dialogs", "transactions", "rtp_ports_in_use")
    line_chart(
        out / "soak_state.svg",
        "soak: server state (/status)",
        "time since the soak began (s)",
        "held (count)",
        [
            Series(k, [(t, float(v[k])) for t, v in s["status_samples"] if isinstance(v[k], int)])
            for k in keys
        ],
    )


def _sipp_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            [sipp_binary(), "-v"], capture_output=True, text=True, timeout=10, check=False
        )
        for line in (done.stdout + done.stderr).splitlines():
            if "SIPp v" in line:
                return line.strip()
    return "SIPp"


# --- main -------------------------------------------------------------------------------------


def recordings_check(data: Path) -> Callable[[int], str]:
    """A check for the recording step: a WAV for every call (closed within 10 s)."""
    directory = data / "recordings"

    def wavs() -> list[Path]:
        return sorted(directory.glob("**/*.wav")) if directory.exists() else []

    seen = {p for p in wavs()}

    def check(calls: int) -> str:
        deadline = time.monotonic() + 10
        new: list[Path] = []
        while time.monotonic() < deadline:
            new = [p for p in wavs() if p not in seen]
            if len(new) >= calls:
                break
            time.sleep(0.5)
        seen.update(new)
        seconds = []
        for path in new:
            with contextlib.suppress(OSError, wave.Error, EOFError), wave.open(str(path)) as w:
                seconds.append(w.getnframes() / w.getframerate())
        mean = sum(seconds) / len(seconds) if seconds else 0.0
        note = f" ({len(new)} recordings, mean {mean:.1f} s)"
        if len(new) < calls:
            note += f" {calls - len(new)} recordings missing"
        return note

    return check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short steps, 1-minute soak (<5 min)")
    parser.add_argument("--out", type=Path, help="results folder (default loadtests/results/TS)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--only", help="comma-separated steps: register,calls,media,recording,soak (default all)"
    )
    parser.add_argument(
        "--kernel-forwarding",
        action="store_true",
        help="the server's relay hands latched calls to nftables ([media] kernel_forwarding)",
    )
    args = parser.parse_args(argv)
    prof = QUICK if args.quick else FULL
    wanted = set((args.only or "register,calls,media,recording,soak").split(","))
    started = datetime.now(UTC)
    out = args.out or RESULTS / started.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    raise_open_files_limit()
    # Ctrl-C or SIGTERM: unwind through every finally (which ends the processes by pid).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="pbx-suite-"))
    sections: dict[str, list[StepRecord]] = {}
    soak_result: dict[str, Any] | None = None
    errors: list[str] = []
    print(
        f"pbx load-test suite ({'quick' if args.quick else 'full'}): {os.cpu_count()} CPUs, "
        f"results in {out}",
        flush=True,
    )
    try:
        config, storm, phones = write_suite_config(workdir / "pbx", args.kernel_forwarding)
        audio = write_audio(workdir / "audio.al")
        secs = prof.seconds
        signalling = CallKind(
            scenario("carrier_calls.xml", workdir, audio),
            scenario("phone_answer.xml", workdir, audio),
            numbers_csv(workdir / "plain.csv", [PLAIN]),
            0,
            media=False,
            extension=PHONE,
        )
        media = CallKind(
            scenario("carrier_media.xml", workdir, audio),
            scenario("phone_media.xml", workdir, audio),
            numbers_csv(workdir / "media.csv", [TO_MEDIA]),
            prof.media_hold_ms,
            media=True,
            extension=MEDIA_PHONE,
        )
        recorded = CallKind(
            media.carrier,
            media.phone,
            numbers_csv(workdir / "recorded.csv", [TO_RECORDED]),
            prof.media_hold_ms,
            media=True,
            extension=RECORDED,
        )
        with pbx_server(config, out / "pbx.log") as server:
            ports = {ext: register_phone(server, rows, workdir) for ext, rows in phones.items()}
            print(
                f"pbx pid {server.pid}, UDP {server.udp[1]}, admin {server.admin[1]}; "
                f"phones registered at {PHONE_IP}: {ports}",
                flush=True,
            )
            direct_port = free_port(host=PHONE_IP)
            direct_target = (PHONE_IP, direct_port)

            def section_deadline(name: str) -> float:
                return time.monotonic() + prof.budgets[name]

            if "register" in wanted:
                print("1. registration storm", flush=True)
                deadline = section_deadline("register")
                storm_port = bench_register.free_udp_port()
                records = climb(
                    lambda r: register_step(
                        "register",
                        "pbx",
                        server.udp[1],
                        server.pid,
                        storm,
                        r,
                        secs,
                        workdir,
                        storm_port,
                    ),
                    prof.register_rates,
                    secs,
                    deadline,
                    prof.retries,
                )
                with bench_register.sipp_uas(workdir) as (uas_pid, uas_port):
                    records += climb(
                        lambda r: register_step(
                            "register", "direct", uas_port, uas_pid, storm, r, secs, workdir
                        ),
                        direct_rates(prof.register_direct, records),
                        secs,
                        time.monotonic() + prof.direct_budget,
                        0,
                    )
                sections["register"] = records

            if wanted & {"calls", "media", "recording"}:
                # Warm-up (lazy imports, first-call paths), not reported.
                call_step(
                    "warmup", "pbx", signalling, 20, 3, server.udp, ports[PHONE], workdir, None
                )

            for name, kind, rates, direct in (
                ("calls", signalling, prof.call_rates, prof.call_direct),
                ("media", media, prof.media_rates, prof.media_direct),
                ("recording", recorded, prof.recording_rates, ()),
            ):
                if name not in wanted:
                    continue
                print(f"{len(sections) + 1}. {name}", flush=True)
                deadline = section_deadline(name)
                step_time = secs + kind.hold_ms / 1000
                check = recordings_check(server.data) if name == "recording" else None

                def run_pbx(
                    rate: int, name: str = name, kind: CallKind = kind, check: Any = check
                ) -> StepRecord:
                    return call_step(
                        name,
                        "pbx",
                        kind,
                        rate,
                        secs,
                        server.udp,
                        ports[kind.extension],
                        workdir,
                        server,
                        check,
                    )

                def run_direct(rate: int, name: str = name, kind: CallKind = kind) -> StepRecord:
                    return call_step(
                        name, "direct", kind, rate, secs, direct_target, direct_port, workdir, None
                    )

                records = climb(run_pbx, rates, int(step_time), deadline, prof.retries)
                settle(server, records)
                if direct:
                    records += climb(
                        run_direct,
                        direct_rates(direct, records),
                        int(step_time),
                        time.monotonic() + prof.direct_budget,
                        0,
                    )
                sections[name] = records

            if "soak" in wanted:
                # Half the server's best call rate (of the steps run), at most the profile's.
                rate = prof.soak_call_rate
                if "calls" in sections or "media" in sections:
                    held = [best(sections.get(n, []), "pbx") for n in ("calls", "media")]
                    top = max((r.rate for r in held if r is not None), default=2)
                    rate = max(1, min(rate, top // 2))
                print(f"{len(sections) + 1}. soak: {prof.soak_seconds} s", flush=True)
                soak_result = soak(server, prof, ports[SOAK_PHONE], storm, workdir, audio, rate)
                print("  " + soak_summary(soak_result), flush=True)
    except KeyboardInterrupt:
        errors.append("interrupted")
        print("interrupted: stopping every process started", flush=True)
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        print(f"error: {type(exc).__name__}: {exc}", flush=True)
    finally:
        end_all()
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - began
    heads = [headline(name, records) for name, records in sections.items()]
    for name, records in sections.items():
        plots(out, name, records)
    if soak_result is not None:
        soak_plots(out, soak_result)
    (out / "results.json").write_text(
        json.dumps(
            {
                "quick": args.quick,
                "started": started.isoformat(),
                "elapsed_seconds": elapsed,
                "cpus": os.cpu_count(),
                "headline": heads,
                "steps": {n: [asdict(r) for r in rs] for n, rs in sections.items()},
                "soak": soak_result,
                "errors": errors,
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    report = write_report(
        out, prof, args.quick, sections, soak_result, heads, started, elapsed, errors
    )
    print()
    print(f"Headline ({elapsed / 60:.1f} min; highest rate sustained {prof.seconds} s):")
    for h in heads:
        print("  " + headline_line(h))
    if soak_result is not None:
        print("  " + soak_summary(soak_result))
    print(f"report: {report}")
    soak_ok = soak_result is None or (
        soak_result["traffic_ok"]
        and (soak_result["memory_flat"] or not soak_result["memory_conclusive"])
        and soak_result["no_leaks"]
    )
    return 0 if not errors and soak_ok and all(h["pbx_rate"] for h in heads) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
