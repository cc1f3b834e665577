"""Run the real server as a subprocess on loopback, and drive it (SIPp, raw sockets, admin API).

The server binds port 0 everywhere; its ``server_started`` log event names the ports it got, so
tests wait for that event instead of sleeping. Every process started here is ended by its pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.prometheus import metric_values

REPO = Path(__file__).resolve().parents[2]
SIPP_DIR = REPO / "tests" / "sipp"
START_TIMEOUT = 30.0

# Keep-alive checks (on by default, every 30 s) are off here: the scripted clients of these
# tests (raw sockets, SIPp scenarios) expect only their own dialogue, and an OPTIONS arriving a
# second after REGISTER would be read as the answer they wait for. The keep-alive tests
# (tests/test_service_keepalive.py, tests/interop/) turn them on.
DEFAULT_TENANT = """
[tenant]
domain = "acme.example"
timezone = "Asia/Tokyo"
default = true
qualify_seconds = 0

[limits]
max_users = 10
recording_users = 2
international_calls = false

[[numbers]]
number = "0312345678"

[[numbers]]
number = "0612345678"

[[users]]
extension = "1001"
password = "secret1001"
caller_id = "0312345678"
forward = { busy = "1002", offline = "1003" }

[[users]]
extension = "1002"
password = "secret1002"
caller_id = "0312345678"

[[users]]
extension = "1003"
password = "secret1003"
caller_id = "0312345678"

[[users]]
extension = "1004"
password = "secret1004"
caller_id = "0612345678"

[[incoming]]
number = "0312345678"
targets = "1001,1002"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "0:00"
end = "23:59"

[[incoming]]
number = "0612345678"
targets = "009608"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "0:00"
end = "23:59"
"""


# The test servers' RTP relay range: below Linux's ephemeral ports (32768-60999), where no
# socket another process opens (SIPp's, a softphone's, a connection's) can hold one of them.
# Fixed ranges of the tests' phones and relays also stay below 32768.
RTP_PORTS = "21000-21999"


def write_config(
    root: Path,
    *,
    tenants: dict[str, str] | None = None,
    server_extra: str = "",
    trunk: str = "127.0.0.2:5080",
    admin_port: int = 0,
    sip_extra: str = "",
    listen: str = '["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]',
    rtp_ports: str = RTP_PORTS,
) -> Path:
    """A pbx.toml listening on loopback port 0 (UDP, TCP, admin) with data under ``root``
    (``rtp_ports``: two servers side by side need ranges of their own)."""
    (root / "tenants").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    pbx = textwrap.dedent(
        f"""
        [sip]
        listen = {listen}
        {sip_extra}

        [admin]
        listen = "127.0.0.1:{admin_port}"

        [panel]
        listen = "127.0.0.1:0"

        [storage]
        data_dir = "data"

        [media]
        rtp_ports = "{rtp_ports}"

        [[trunks]]
        name = "carrier"
        address = "{trunk}"
        """
    )
    (root / "pbx.toml").write_text(pbx + server_extra, encoding="utf-8")
    for name, text in (tenants or {"acme": DEFAULT_TENANT}).items():
        (root / "tenants" / f"{name}.toml").write_text(text, encoding="utf-8")
    return root / "pbx.toml"


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    config: Path
    udp: tuple[str, int]
    tcp: tuple[str, int]
    admin: tuple[str, int]
    panel: tuple[str, int] = ("", 0)
    tls: tuple[str, int] = ("", 0)  # a tls: listener (issue #18)
    log_lines: list[dict[str, Any]] = field(default_factory=list)

    def admin_request(self, method: str, path: str) -> tuple[int, Any]:
        url = f"http://{self.admin[0]}:{self.admin[1]}{path}"
        data = b"" if method == "POST" else None
        request = urllib.request.Request(url, method=method, data=data)
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                body = response.read()
                kind = response.headers.get("Content-Type", "")
                return response.status, json.loads(body) if "json" in kind else body.decode()
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def metrics(self) -> dict[str, float]:
        """``GET /metrics`` as {sample: value}; a sample is named with its labels, as in
        ``pbx_calls_total{disposition="answered"}``."""
        status, text = self.admin_request("GET", "/metrics")
        assert status == 200, text
        return metric_values(text)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in list(self.log_lines) if line.get("event") == name]

    def wait_for_events(self, name: str, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The ``name`` log lines once ``count`` of them have arrived (the server's stderr is read
        by a thread, so a line can trail the response it goes with), or what came by ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(found := self.events(name)) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return found


def _pump_stderr(server: RunningServer, started: threading.Event, box: dict[str, Any]) -> None:
    assert server.process.stderr is not None
    for raw in server.process.stderr:
        try:
            line = json.loads(raw)
        except ValueError:
            line = {"event": "_raw", "text": raw.decode(errors="replace")}
        server.log_lines.append(line)
        if line.get("event") == "server_started":
            box["started"] = line
            started.set()
    started.set()  # the process ended (before or after starting)


@contextlib.contextmanager
def running_server(
    config: Path,
    *,
    extra_env: dict[str, str] | None = None,
    nofile: int | None = None,
    source: Path | None = None,
) -> Iterator[RunningServer]:
    """``nofile``: start the server with that soft open-file limit (harden: issue 17).
    ``source``: run the ``pbx`` of that checkout (a benchmark's baseline commit) instead of
    this one."""
    env = {**os.environ, **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
    if source is not None:
        env["PYTHONPATH"] = str(source)

    def lower_nofile() -> None:
        if nofile is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    process = subprocess.Popen(
        [sys.executable, "-m", "pbx", "run", "--config", str(config), "--log-json"],
        cwd=source or REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lower_nofile if nofile is not None else None,
    )
    server = RunningServer(process, config, ("", 0), ("", 0), ("", 0))
    started = threading.Event()
    box: dict[str, Any] = {}
    pump = threading.Thread(target=_pump_stderr, args=(server, started, box), daemon=True)
    pump.start()
    try:
        if not started.wait(START_TIMEOUT) or "started" not in box:
            raise RuntimeError(f"server did not start: {server.log_lines[-20:]}")
        info = box["started"]
        for entry in info["sip"]:
            address = (entry["host"], int(entry["port"]))
            if entry["transport"] == "UDP":
                server.udp = address
            elif entry["transport"] == "TLS":
                server.tls = address
            else:
                server.tcp = address
        server.admin = (info["admin"]["host"], int(info["admin"]["port"]))
        server.panel = (info["panel"]["host"], int(info["panel"]["port"]))
        yield server
    finally:
        stop_process(process)
        pump.join(timeout=5)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``: only ever the process we started."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise RuntimeError("sipp is not installed: run the README's test command (scripts/test.sh)")
    return path


def run_sipp(
    scenario: str,
    target: tuple[str, int],
    *,
    transport: str = "u1",
    calls: int = 1,
    rate: float | None = None,
    local_ip: str = "127.0.0.1",
    extra: list[str] | None = None,
    timeout: float = 60.0,
    workdir: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one SIPp scenario from tests/sipp to completion (bounded by ``-timeout``)."""
    kind = socket.SOCK_STREAM if transport.startswith("t") else socket.SOCK_DGRAM
    args = [
        sipp_binary(),
        f"{target[0]}:{target[1]}",
        "-sf",
        str(SIPP_DIR / scenario),
        "-t",
        transport,
        "-i",
        local_ip,
        "-p",
        str(free_port(kind, local_ip)),
        "-m",
        str(calls),
        "-nostdin",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-max_recv_loops",
        "1000",
        *(["-r", str(rate)] if rate is not None else []),
        *(extra or []),
    ]
    return subprocess.run(
        args,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout + 15,
        check=False,
    )
