"""Calls through the running server, with SIPp as the carrier and as the phones.

The carrier lives on 127.0.0.2 (calls in from any port there; our trunk sends to the port in the
config), the phones on 127.0.0.1: each phone registers with digest (``register.xml``), then a
UAS scenario on the same local port takes its calls. Call records are read from the SQLite file.
Every SIPp process is bounded by ``-timeout`` and ended by its pid.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import re
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    SIPP_DIR,
    RunningServer,
    free_port,
    running_server,
    sipp_binary,
    stop_process,
    write_config,
)

pytestmark = pytest.mark.integration

CARRIER_IP = "127.0.0.2"
PHONE_IP = "127.0.0.1"
EVERY_DAY = 'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]'

TENANT = f"""
[tenant]
domain = "acme.example"
timezone = "Asia/Tokyo"
default = true
qualify_seconds = 0  # scripted clients: no keep-alive OPTIONS (see harness.py)

[limits]
max_users = 10
recording_users = 2
international_calls = false

[[numbers]]
number = "0312345678"
[[numbers]]
number = "0312340002"
[[numbers]]
number = "0312340003"
[[numbers]]
number = "0312340004"
[[numbers]]
number = "0312340005"
[[numbers]]
number = "0312340006"
[[numbers]]
number = "0312340009"

[[users]]
extension = "1001"
password = "secret1001"
caller_id = "0312345678"
forward = {{ busy = "1004" }}

[[users]]
extension = "1002"
password = "secret1002"
caller_id = "0312345678"
forward = {{ no_answer = "09012345678" }}

[[users]]
extension = "1003"
password = "secret1003"
caller_id = "0312345678"
forward = {{ offline = "1004" }}

[[users]]
extension = "1004"
password = "secret1004"
caller_id = "0312340004"
recording = true

[[incoming]]
number = "0312345678"
targets = "1001,1002"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"

[[incoming]]
number = "0312340002"
targets = "1001"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"

[[incoming]]
number = "0312340003"
targets = "1002"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"

[[incoming]]
number = "0312340004"
targets = "1003"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"

[[incoming]]
number = "0312340005"
targets = "1004"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"

[[users]]
extension = "1005"
password = "secret1005"
caller_id = "0312345678"

[[incoming]]
number = "0312340006"
targets = "1005"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"

[[incoming]]
number = "0312340009"
targets = "009608"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"
"""

SERVER_EXTRA = """
[security]
max_requests_per_second = 10000
"""

PASSWORDS = {ext: f"secret{ext}" for ext in ("1001", "1002", "1003", "1004")}
SIPP_TIMEOUT = 60


@dataclass
class Pbx:
    server: RunningServer
    root: Path
    trunk_port: int
    phone_ports: dict[str, int]

    @property
    def db(self) -> Path:
        return self.root / "data" / "pbx.sqlite3"


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pbx]:
    root = tmp_path_factory.mktemp("calls")
    trunk_port = free_port(host=CARRIER_IP)
    config = write_config(
        root,
        tenants={"acme": TENANT},
        server_extra=SERVER_EXTRA,
        trunk=f"{CARRIER_IP}:{trunk_port}",
    )
    with running_server(config) as server:
        ports = {ext: free_port(host=PHONE_IP) for ext in ("1001", "1002", "1004")}
        for ext, port in ports.items():
            register(server, ext, port, root)
        yield Pbx(server, root, trunk_port, ports)


# --- SIPp helpers ----------------------------------------------------------------------------


def scenario_from_template(name: str, workdir: Path, **values: str) -> Path:
    """A ``tests/sipp/<name>.in`` template with its ``@KEY@`` placeholders filled in."""
    text = (SIPP_DIR / f"{name}.in").read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    path = workdir / f"{name.removesuffix('.xml')}-{'-'.join(values.values())}.xml"
    path.write_text(text, encoding="utf-8")
    return path


def sipp_args(
    scenario: Path,
    target: tuple[str, int],
    *,
    local_ip: str,
    port: int,
    service: str,
    extra: list[str] | None = None,
    timeout: int = SIPP_TIMEOUT,
) -> list[str]:
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
        "-m",
        "1",
        "-s",
        service,
        "-nostdin",
        "-timeout",
        f"{timeout}s",
        "-timeout_error",
        "-max_recv_loops",
        "1000",
        *(extra or []),
    ]


def run(args: list[str], workdir: Path, timeout: float = SIPP_TIMEOUT + 15) -> str:
    """Run SIPp to completion; fail the test with its output unless it exits 0."""
    done = subprocess.run(
        args, cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, (
        f"sipp {args[3]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


def register_args(
    target: tuple[str, int], local_ip: str, port: int, ext: str, password: str
) -> list[str]:
    """SIPp registering ``ext`` from ``local_ip:port`` to ``target`` (digest)."""
    return sipp_args(
        SIPP_DIR / "register.xml",
        target,
        local_ip=local_ip,
        port=port,
        service=ext,
        extra=["-au", ext, "-ap", password],
        timeout=15,
    )


def register(server: RunningServer, ext: str, port: int, workdir: Path) -> None:
    run(register_args(server.udp, PHONE_IP, port, ext, PASSWORDS[ext]), workdir)


def wait_bound(
    host: str, port: int, deadline: float, proc: subprocess.Popen[str] | None = None
) -> None:
    """Wait until something (the SIPp we started) has bound UDP ``host:port``; with ``proc``,
    fail with its output as soon as it has exited without binding."""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout is not None else ""
            raise AssertionError(
                f"exited ({proc.returncode}) before binding {host}:{port}: {out[-2000:]}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return
                raise
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on {host}:{port}")


class Sipps:
    """SIPp processes running in the background for one test; ended by pid in ``close``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[str]]] = []

    def start(self, name: str, args: list[str], bound: tuple[str, int] | None = None) -> None:
        """Start SIPp; with ``bound``, wait until it has bound that address. A SIPp that exits
        before binding (its port taken for a moment by another socket's ephemeral port: seen
        once in CI) is started once more, and its output is part of the failure otherwise."""
        for attempt in (1, 2):
            proc = subprocess.Popen(
                args,
                cwd=self.workdir,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            self.procs.append((name, proc))
            if bound is None:
                return
            try:
                wait_bound(*bound, time.monotonic() + 10, proc)
                return
            except AssertionError:
                if attempt == 2 or proc.poll() is None:
                    raise
                self.procs.remove((name, proc))

    def wait_all(self, timeout: float = SIPP_TIMEOUT + 15) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        codes: dict[str, int] = {}
        outputs: dict[str, str] = {}
        for name, proc in self.procs:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            codes[name] = proc.returncode
            outputs[name] = out
        bad = {n: c for n, c in codes.items() if c != 0}
        assert not bad, "sipp failures: " + "\n\n".join(
            f"{n} -> {c}\n{outputs[n][-3000:]}" for n, c in bad.items()
        )
        return codes

    def close(self) -> None:
        for _, proc in self.procs:
            with contextlib.suppress(Exception):
                stop_process(proc, timeout=5)  # type: ignore[arg-type]


@pytest.fixture
def sipps(tmp_path: Path) -> Iterator[Sipps]:
    group = Sipps(tmp_path)
    try:
        yield group
    finally:
        group.close()


def phone(pbx: Pbx, sipps: Sipps, ext: str, scenario: str) -> None:
    """Extension ``ext`` (registered at module start) runs ``scenario`` as UAS on its port."""
    port = pbx.phone_ports[ext]
    args = sipp_args(SIPP_DIR / scenario, pbx.server.udp, local_ip=PHONE_IP, port=port, service=ext)
    sipps.start(f"{ext}:{scenario}", args, bound=(PHONE_IP, port))


def trunk(pbx: Pbx, sipps: Sipps, from_user: str) -> Path:
    """The carrier's receiving side on the trunk port; returns its message log file."""
    scenario = scenario_from_template("trunk_answer.xml", sipps.workdir, FROM_USER=from_user)
    args = sipp_args(
        scenario,
        pbx.server.udp,
        local_ip=CARRIER_IP,
        port=pbx.trunk_port,
        service="carrier",
        extra=["-trace_logs", "-log_file", str(sipps.workdir / "trunk.log")],
    )
    sipps.start("trunk", args, bound=(CARRIER_IP, pbx.trunk_port))
    return sipps.workdir / "trunk.log"


def carrier_call(
    pbx: Pbx,
    sipps: Sipps,
    number: str,
    scenario: Path | str = "carrier_call.xml",
    hold_ms: int = 500,
) -> None:
    path = scenario if isinstance(scenario, Path) else SIPP_DIR / scenario
    args = sipp_args(
        path,
        pbx.server.udp,
        local_ip=CARRIER_IP,
        port=free_port(host=CARRIER_IP),
        service=number,
        extra=["-d", str(hold_ms)],
    )
    sipps.start(f"carrier:{path.name}", args)


# --- records ---------------------------------------------------------------------------------


def calls_to(pbx: Pbx, called: str) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(pbx.db)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT * FROM call_records WHERE called = ? ORDER BY started_at", (called,)
        ).fetchall()
    out = []
    for row in rows:
        record = dict(row)
        record["forwarding"] = json.loads(record["forwarding"])
        record["trace"] = json.loads(record["trace"])
        out.append(record)
    return out


def wait_for(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` (bounded) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def closed_record(pbx: Pbx, called: str, count: int = 1) -> dict[str, Any]:
    """The ``count``-th record of calls to ``called`` once it is closed."""

    def check() -> dict[str, Any] | None:
        rows = calls_to(pbx, called)
        if len(rows) >= count and rows[count - 1]["ended_at"] is not None:
            return rows[count - 1]
        return None

    record: dict[str, Any] = wait_for(f"closed record of a call to {called}", check)
    return record


def no_active_calls(pbx: Pbx) -> None:
    def check() -> bool:
        status, calls = pbx.server.admin_request("GET", "/calls")
        return status == 200 and calls == []

    wait_for("no active calls", check)


# --- tests -----------------------------------------------------------------------------------


def test_number_rings_both_extensions_and_the_first_answer_wins(pbx: Pbx, sipps: Sipps) -> None:
    # 1001 must see a CANCEL with RFC 3326 Reason cause=200 (not a missed call).
    phone(pbx, sipps, "1001", "phone_ring_cancelled_elsewhere.xml")
    phone(pbx, sipps, "1002", "phone_answer.xml")
    carrier_call(pbx, sipps, "0312345678")
    sipps.wait_all()
    record = closed_record(pbx, "0312345678")
    assert record["disposition"] == "answered"
    assert record["answered_by"] == "1002"
    assert record["tenant"] == "acme"
    assert record["caller"] == "0901112222"
    assert record["answered_at"] is not None
    assert record["started_at"] <= record["answered_at"] <= record["ended_at"]
    assert any("rule 1" in line and "1001,1002" in line for line in record["trace"])
    assert any("1002" in line and "answered" in line for line in record["trace"])
    assert record["forwarding"] == []
    no_active_calls(pbx)


def test_caller_cancel_cancels_every_fork_and_gets_487(pbx: Pbx, sipps: Sipps) -> None:
    # Their CANCELs must not say "completed elsewhere": the phones show a missed call.
    phone(pbx, sipps, "1001", "phone_ring_cancelled_by_caller.xml")
    phone(pbx, sipps, "1002", "phone_ring_cancelled_by_caller.xml")
    before = len(calls_to(pbx, "0312345678"))
    carrier_call(pbx, sipps, "0312345678", scenario="carrier_cancel.xml")
    sipps.wait_all()
    record = closed_record(pbx, "0312345678", before + 1)
    assert record["disposition"] == "cancelled"
    assert record["answered_by"] is None
    assert record["answered_at"] is None
    no_active_calls(pbx)


def test_busy_extension_is_forwarded_to_its_busy_destination(pbx: Pbx, sipps: Sipps) -> None:
    phone(pbx, sipps, "1001", "phone_busy.xml")
    phone(pbx, sipps, "1004", "phone_answer.xml")
    carrier_call(pbx, sipps, "0312340002")
    sipps.wait_all()
    record = closed_record(pbx, "0312340002")
    assert record["disposition"] == "answered"
    assert record["answered_by"] == "1004"
    assert record["forwarding"] == [{"from": "1001", "reason": "user-busy", "to": "1004"}]
    assert any("1001 busy" in line and "forward busy to 1004" in line for line in record["trace"])
    no_active_calls(pbx)


def test_offline_extension_is_forwarded_to_its_offline_destination(pbx: Pbx, sipps: Sipps) -> None:
    phone(pbx, sipps, "1004", "phone_answer.xml")
    carrier_call(pbx, sipps, "0312340004")  # rings 1003, never registered
    sipps.wait_all()
    record = closed_record(pbx, "0312340004")
    assert record["disposition"] == "answered"
    assert record["answered_by"] == "1004"
    assert record["forwarding"] == [{"from": "1003", "reason": "unavailable", "to": "1004"}]
    no_active_calls(pbx)


def test_unanswered_extension_is_forwarded_out_after_the_default_20_seconds(
    pbx: Pbx, sipps: Sipps
) -> None:
    phone(pbx, sipps, "1002", "phone_ring_cancelled.xml")
    log = trunk(pbx, sipps, from_user="0901112222")  # the original caller is presented
    started = time.monotonic()
    carrier_call(pbx, sipps, "0312340003")
    sipps.wait_all()
    assert time.monotonic() - started >= 20
    record = closed_record(pbx, "0312340003")
    assert record["disposition"] == "answered"
    assert record["answered_by"] == "09012345678"
    assert record["forwarding"] == [{"from": "1002", "reason": "no-answer", "to": "09012345678"}]
    assert record["answered_at"] - record["started_at"] >= 20
    text = log.read_text(encoding="utf-8")
    assert "dialled=09012345678" in text
    assert "reason=no-answer" in text
    no_active_calls(pbx)


def test_outbound_call_presents_the_users_caller_id(pbx: Pbx, sipps: Sipps) -> None:
    log = trunk(pbx, sipps, from_user="0312340004")  # 1004's caller_id
    scenario = scenario_from_template("phone_call.xml", sipps.workdir, NUMBER="0398765432")
    args = sipp_args(
        scenario,
        pbx.server.udp,
        local_ip=PHONE_IP,
        port=free_port(host=PHONE_IP),
        service="1004",
        extra=["-au", "1004", "-ap", PASSWORDS["1004"], "-d", "300"],
    )
    sipps.start("1004 calls out", args)
    sipps.wait_all()
    assert "dialled=0398765432" in log.read_text(encoding="utf-8")
    record = closed_record(pbx, "0398765432")
    assert record["disposition"] == "answered"
    assert record["caller"] == "1004"
    assert record["answered_by"] == "0398765432"
    no_active_calls(pbx)


def test_international_call_is_refused_with_403_while_barred(pbx: Pbx, sipps: Sipps) -> None:
    scenario = scenario_from_template(
        "phone_call_refused.xml", sipps.workdir, NUMBER="0101234567890", STATUS="403"
    )
    args = sipp_args(
        scenario,
        pbx.server.udp,
        local_ip=PHONE_IP,
        port=free_port(host=PHONE_IP),
        service="1004",
        extra=["-au", "1004", "-ap", PASSWORDS["1004"]],
    )
    sipps.start("1004 calls abroad", args)
    sipps.wait_all()
    record = closed_record(pbx, "0101234567890")
    assert record["disposition"] == "failed"
    assert any("international calls are off" in line for line in record["trace"])


def test_call_survives_a_reload_and_keeps_its_configuration(pbx: Pbx, sipps: Sipps) -> None:
    phone(pbx, sipps, "1001", "phone_ring_cancelled.xml")
    phone(pbx, sipps, "1002", "phone_answer.xml")
    before = len(calls_to(pbx, "0312345678"))
    carrier_call(pbx, sipps, "0312345678", hold_ms=4000)

    def answered() -> list[dict[str, Any]]:
        _, calls = pbx.server.admin_request("GET", "/calls")
        return [c for c in calls if c["state"] == "answered"]

    (call,) = wait_for("the call to be answered", answered)
    old_version = call["config_version"]
    tenant_file = pbx.root / "tenants" / "acme.toml"
    original = tenant_file.read_text(encoding="utf-8")
    try:
        tenant_file.write_text(original.replace('targets = "1001,1002"', 'targets = "1004"'))
        status, body = pbx.server.admin_request("POST", "/reload")
        assert status == 200, body
        assert body["version"] == old_version + 1
        _, calls = pbx.server.admin_request("GET", "/calls")
        assert [c["config_version"] for c in calls] == [old_version]
        sipps.wait_all()
    finally:
        tenant_file.write_text(original)
        pbx.server.admin_request("POST", "/reload")
    record = closed_record(pbx, "0312345678", before + 1)
    assert record["disposition"] == "answered"
    assert record["answered_by"] == "1002"
    assert record["ended_at"] - record["answered_at"] >= 3.5
    no_active_calls(pbx)


def test_callee_hangs_up_and_the_caller_gets_the_bye(pbx: Pbx, sipps: Sipps) -> None:
    phone(pbx, sipps, "1001", "phone_answer_hangup.xml")
    before = len(calls_to(pbx, "0312340002"))
    carrier_call(pbx, sipps, "0312340002", scenario="carrier_call_hungup.xml")
    sipps.wait_all()
    record = closed_record(pbx, "0312340002", before + 1)
    assert record["disposition"] == "answered"
    assert record["answered_by"] == "1001"
    assert any("1001 hung up" in line for line in record["trace"])
    no_active_calls(pbx)


def test_internal_call_between_extensions(pbx: Pbx, sipps: Sipps) -> None:
    phone(pbx, sipps, "1001", "phone_answer.xml")
    scenario = scenario_from_template("phone_call.xml", sipps.workdir, NUMBER="1001")
    args = sipp_args(
        scenario,
        pbx.server.udp,
        local_ip=PHONE_IP,
        port=free_port(host=PHONE_IP),
        service="1004",
        extra=["-au", "1004", "-ap", PASSWORDS["1004"], "-d", "300"],
    )
    sipps.start("1004 calls 1001", args)
    sipps.wait_all()
    record = closed_record(pbx, "1001")
    assert record["disposition"] == "answered"
    assert record["caller"] == "1004"
    assert record["answered_by"] == "1001"
    assert record["tenant"] == "acme"
    no_active_calls(pbx)


def test_info_reinvite_and_update_are_relayed_with_sdp_on_the_relay_and_recorded(
    pbx: Pbx, sipps: Sipps
) -> None:
    """Both legs see the relay's address and port in every SDP (offer, answer, hold re-INVITE);
    1004 has recording ON, so the call is recorded to a WAV named in the record."""
    phone(pbx, sipps, "1004", "phone_answer_midcall.xml")
    carrier_call(pbx, sipps, "0312340005", scenario="carrier_call_midcall.xml")
    sipps.wait_all()
    record = closed_record(pbx, "0312340005")
    assert record["disposition"] == "answered"
    assert record["answered_by"] == "1004"
    path = Path(record["recording_path"])
    assert path.parent == pbx.root / "data" / "recordings"
    wait_for("the recording to be closed", lambda: path.is_file() and path.stat().st_size >= 44)
    assert path.read_bytes()[:4] == b"RIFF"
    no_active_calls(pbx)


def test_announcement_is_answered_played_and_hung_up(pbx: Pbx, sipps: Sipps) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        rtp.bind((CARRIER_IP, 0))
        rtp.settimeout(0.5)
        args = sipp_args(
            SIPP_DIR / "carrier_announcement.xml",
            pbx.server.udp,
            local_ip=CARRIER_IP,
            port=free_port(host=CARRIER_IP),
            service="0312340009",
            extra=["-set", "rtp_port", str(rtp.getsockname()[1])],
        )
        sipps.start("carrier hears 009608", args)
        packets: list[bytes] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                packets.append(rtp.recv(2048))
            except TimeoutError:
                if packets:
                    break
    sipps.wait_all()
    # 20 ms PCMA packets (payload type 8, the caller's first choice) for the 12 s prompt.
    assert len(packets) >= 500
    assert all(len(p) == 12 + 160 and p[1] & 0x7F == 8 for p in packets)
    record = closed_record(pbx, "0312340009")
    assert record["disposition"] == "answered"
    assert record["answered_by"] == "009608"
    assert any("009608 played" in line for line in record["trace"])
    no_active_calls(pbx)


def test_requests_for_unknown_dialogs_get_481(pbx: Pbx) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((PHONE_IP, 0))
        sock.settimeout(5)
        host, port = sock.getsockname()
        bye = (
            f"BYE sip:pbx@{pbx.server.udp[0]}:{pbx.server.udp[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-unknown-dialog\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:1001@acme.example>;tag=nosuch\r\n"
            "To: <sip:0312345678@acme.example>;tag=nosuchdialog\r\n"
            "Call-ID: unknown-dialog@test\r\n"
            "CSeq: 2 BYE\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        sock.sendto(bye, pbx.server.udp)
        reply, _ = sock.recvfrom(65535)
    assert reply.startswith(b"SIP/2.0 481 ")


def test_extension_on_a_call_is_busy(pbx: Pbx, sipps: Sipps) -> None:
    """max_calls_per_user = 1: while 1002 talks, a call ringing only 1002 (which has no busy
    forward) is refused 486."""
    phone(pbx, sipps, "1001", "phone_ring_cancelled.xml")
    phone(pbx, sipps, "1002", "phone_answer.xml")
    carrier_call(pbx, sipps, "0312345678", hold_ms=3000)

    def answered() -> list[dict[str, Any]]:
        _, calls = pbx.server.admin_request("GET", "/calls")
        return [c for c in calls if c["state"] == "answered" and c["answered_by"] == "1002"]

    wait_for("1002 to answer", answered)
    second = Sipps(sipps.workdir)
    try:
        refused = scenario_from_template("carrier_rejected.xml", sipps.workdir, STATUS="486")
        carrier_call(pbx, second, "0312340003", scenario=refused)
        second.wait_all()
    finally:
        second.close()
    sipps.wait_all()
    record = closed_record(pbx, "0312340003", len(calls_to(pbx, "0312340003")))
    assert record["disposition"] == "busy"
    assert any("1002 busy" in line for line in record["trace"])
    no_active_calls(pbx)


def test_max_ring_seconds_ends_an_unanswered_call_with_480(tmp_path: Path, sipps: Sipps) -> None:
    extra = SERVER_EXTRA + "\n[calls]\nmax_ring_seconds = 3\n"
    config = write_config(tmp_path / "pbx", tenants={"acme": TENANT}, server_extra=extra)
    with running_server(config) as server:
        port = free_port(host=PHONE_IP)
        register(server, "1001", port, tmp_path)
        pbx = Pbx(server, tmp_path / "pbx", 0, {"1001": port})
        phone(pbx, sipps, "1001", "phone_ring_cancelled.xml")
        refused = scenario_from_template("carrier_rejected.xml", sipps.workdir, STATUS="480")
        started = time.monotonic()
        carrier_call(pbx, sipps, "0312340002", scenario=refused)
        sipps.wait_all()
        assert time.monotonic() - started >= 3
        record = closed_record(pbx, "0312340002")
        assert record["disposition"] == "no_answer"
        assert any("nobody answered within 3s" in line for line in record["trace"])


def test_caller_that_never_acks_gets_the_2xx_retransmitted_then_bye_on_both_legs(
    pbx: Pbx, sipps: Sipps
) -> None:
    phone(pbx, sipps, "1001", "phone_answer.xml")  # gets our ACK, then our BYE
    before = len(calls_to(pbx, "0312340002"))
    started = time.monotonic()
    carrier_call(pbx, sipps, "0312340002", scenario="carrier_call_no_ack.xml")
    sipps.wait_all()
    assert time.monotonic() - started >= 30  # 64*T1 of 2xx retransmissions first
    record = closed_record(pbx, "0312340002", before + 1)
    assert record["disposition"] == "failed"
    assert record["answered_by"] == "1001"
    assert any("no ACK" in line for line in record["trace"])
    no_active_calls(pbx)


def test_no_rtp_for_inactivity_seconds_hangs_up_both_sides(tmp_path: Path, sipps: Sipps) -> None:
    config = write_config(tmp_path / "pbx", tenants={"acme": TENANT}, server_extra=SERVER_EXTRA)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[media]\n", "[media]\ninactivity_seconds = 2\n"))
    with running_server(config) as server:
        port = free_port(host=PHONE_IP)
        register(server, "1001", port, tmp_path)
        pbx = Pbx(server, tmp_path / "pbx", 0, {"1001": port})
        phone(pbx, sipps, "1001", "phone_answer_sdp.xml")  # answers, never sends RTP
        args = sipp_args(
            SIPP_DIR / "carrier_announcement.xml",  # offers SDP, answered, waits for BYE
            server.udp,
            local_ip=CARRIER_IP,
            port=free_port(host=CARRIER_IP),
            service="0312340002",
            extra=["-set", "rtp_port", str(free_port(host=CARRIER_IP))],
        )
        sipps.start("carrier, silent", args)
        sipps.wait_all()
        record = closed_record(pbx, "0312340002")
        assert record["disposition"] == "answered"
        assert any("no RTP from the" in line for line in record["trace"])
        # Silence counts from when the relay opened (at the INVITE), not from the answer.
        assert record["ended_at"] - record["started_at"] >= 2
        assert record["ended_at"] - record["answered_at"] < 10
        _, metrics = server.admin_request("GET", "/metrics")
        assert re.search(r"^pbx_rtp_ports_in_use 0(\.0)?$", metrics, re.M), metrics


# --- a phone over TCP (raw socket: SIPp cannot register and take calls on one connection) ----


def read_sip(conn: socket.socket, buffer: bytearray) -> bytes:
    """One SIP message from a TCP stream (headers, then Content-Length bytes)."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65535)
        assert chunk, "connection closed"
        buffer.extend(chunk)
    head, _, _ = bytes(buffer).partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
    total = len(head) + 4 + (int(match.group(1)) if match else 0)
    while len(buffer) < total:
        buffer.extend(conn.recv(65535))
    message = bytes(buffer[:total])
    del buffer[:total]
    return message


def header(message: bytes, name: str) -> str:
    match = re.search(rf"(?im)^{name}\s*:\s*(.*?)\r$", message.decode())
    assert match, f"no {name} in {message!r}"
    return match.group(1)


def digest_authorization(challenge: str, user: str, password: str, method: str, uri: str) -> str:
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = fields["realm"], fields["nonce"]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    cnonce, nc = "0a4f113b", "00000001"
    response = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"'
    )


def test_calls_reach_a_tcp_phone_over_its_registration_connection(pbx: Pbx, sipps: Sipps) -> None:
    with socket.create_connection(pbx.server.tcp, timeout=10) as conn:
        host, port = conn.getsockname()
        contact = f"sip:1005@{host}:{port};transport=tcp"
        buffer = bytearray()
        authorization = ""
        for cseq in (1, 2):
            register = (
                "REGISTER sip:acme.example SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP {host}:{port};branch=z9hG4bK-tcp-reg-{cseq}\r\n"
                "Max-Forwards: 70\r\n"
                "From: <sip:1005@acme.example>;tag=tcpreg\r\n"
                "To: <sip:1005@acme.example>\r\n"
                "Call-ID: tcp-phone-register@test\r\n"
                f"CSeq: {cseq} REGISTER\r\n"
                f"Contact: <{contact}>\r\n"
                f"{authorization}"
                "Expires: 600\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            conn.sendall(register.encode())
            reply = read_sip(conn, buffer)
            if reply.startswith(b"SIP/2.0 401"):
                value = digest_authorization(
                    header(reply, "WWW-Authenticate"),
                    "1005",
                    "secret1005",
                    "REGISTER",
                    "sip:acme.example",
                )
                authorization = f"Authorization: {value}\r\n"
                continue
            assert reply.startswith(b"SIP/2.0 200"), reply
            break
        carrier_call(pbx, sipps, "0312340006", hold_ms=300)
        invite = read_sip(conn, buffer)
        assert invite.startswith(f"INVITE {contact} SIP/2.0".encode()), invite
        assert "SIP/2.0/TCP" in header(invite, "Via")

        def reply_to(request: bytes, status: str, tag: bool = True) -> bytes:
            to = header(request, "To") + (";tag=tcpphone" if tag else "")
            vias = "".join(
                f"Via: {v}\r\n" for v in re.findall(r"(?im)^Via\s*:\s*(.*?)\r$", request.decode())
            )
            return (
                f"SIP/2.0 {status}\r\n{vias}"
                f"From: {header(request, 'From')}\r\nTo: {to}\r\n"
                f"Call-ID: {header(request, 'Call-ID')}\r\nCSeq: {header(request, 'CSeq')}\r\n"
                f"Contact: <{contact}>\r\nContent-Length: 0\r\n\r\n"
            ).encode()

        conn.sendall(reply_to(invite, "180 Ringing") + reply_to(invite, "200 OK"))
        ack = read_sip(conn, buffer)
        assert ack.startswith(b"ACK "), ack
        bye = read_sip(conn, buffer)
        assert bye.startswith(b"BYE "), bye
        conn.sendall(reply_to(bye, "200 OK", tag=False))
        sipps.wait_all()
    record = closed_record(pbx, "0312340006")
    assert record["disposition"] == "answered"
    assert record["answered_by"] == "1005"


def test_authenticated_user_must_be_the_from_user(pbx: Pbx, sipps: Sipps) -> None:
    """1004's credentials on an INVITE whose From says 1001: refused with 403, no call placed."""
    scenario = scenario_from_template(
        "phone_call_refused.xml", sipps.workdir, NUMBER="1002", STATUS="403"
    )
    args = sipp_args(
        scenario,
        pbx.server.udp,
        local_ip=PHONE_IP,
        port=free_port(host=PHONE_IP),
        service="1001",  # From user
        extra=["-au", "1004", "-ap", PASSWORDS["1004"]],
    )
    sipps.start("1001 impersonated by 1004", args)
    sipps.wait_all()
    assert pbx.server.events("call_identity_mismatch")
    assert calls_to(pbx, "1002") == []


def test_early_media_183_is_relayed_with_the_relay_in_its_sdp(pbx: Pbx, sipps: Sipps) -> None:
    phone(pbx, sipps, "1001", "phone_early_media.xml")
    before = len(calls_to(pbx, "0312340002"))
    carrier_call(pbx, sipps, "0312340002", scenario="carrier_early_media.xml", hold_ms=300)
    sipps.wait_all()
    record = closed_record(pbx, "0312340002", before + 1)
    assert record["disposition"] == "answered"
    assert record["answered_by"] == "1001"
    no_active_calls(pbx)


def test_ack_with_a_foreign_to_tag_still_stops_the_2xx_retransmissions(
    pbx: Pbx, sipps: Sipps
) -> None:
    """pyVoIP 1.6 ACKs a 2xx with a To tag of its own: Call-ID, From tag and CSeq still name
    our 2xx, so it is taken (no retransmission after it, no teardown)."""
    phone(pbx, sipps, "1001", "phone_answer.xml")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((CARRIER_IP, 0))
        sock.settimeout(10)
        host, port = sock.getsockname()
        server = f"{pbx.server.udp[0]}:{pbx.server.udp[1]}"

        def request(method: str, cseq: int, to_tag: str | None, branch: str) -> bytes:
            to = f"<sip:0312340002@{server}>" + (f";tag={to_tag}" if to_tag else "")
            return (
                f"{method} sip:0312340002@{server} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-{branch}\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:0901112222@{host}>;tag=rawcaller\r\n"
                f"To: {to}\r\n"
                "Call-ID: foreign-to-tag@test\r\n"
                f"CSeq: {cseq} {method}\r\n"
                f"Contact: <sip:0901112222@{host}:{port}>\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()

        sock.sendto(request("INVITE", 1, None, "inv"), pbx.server.udp)
        while True:
            reply, _ = sock.recvfrom(65535)
            if reply.startswith(b"SIP/2.0 200"):
                break
            assert reply.startswith((b"SIP/2.0 100", b"SIP/2.0 180")), reply
        our_tag = re.search(rb"(?im)^To:.*;tag=([^;\r]+)", reply)
        assert our_tag is not None
        sock.sendto(request("ACK", 1, "pyvoip-random-tag", "ack"), pbx.server.udp)
        sock.settimeout(1.6)  # a 2xx retransmission would come after T1, then 2*T1
        with pytest.raises(TimeoutError):
            sock.recvfrom(65535)
        sock.settimeout(10)
        sock.sendto(request("BYE", 2, our_tag.group(1).decode(), "bye"), pbx.server.udp)
        reply, _ = sock.recvfrom(65535)
        assert reply.startswith(b"SIP/2.0 200"), reply
    sipps.wait_all()
    record = closed_record(pbx, "0312340002", len(calls_to(pbx, "0312340002")))
    assert record["disposition"] == "answered"
    assert not any("no ACK" in line for line in record["trace"])
