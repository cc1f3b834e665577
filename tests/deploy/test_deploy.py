"""Running pbx as a service (issue 19): the systemd unit, journald log lines, the demo passwords,
the run script's one-time install, backup and restore, ``pbx calls``, and the small things
(drop reasons, the RTP-ports figure, an unchanged reload, ``pbx status | head``)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx.call.record import CallRecord
from pbx.config.demo import DEMO_PASSWORDS, demo_password_refusal
from pbx.config.load import load_config
from pbx.store import Store
from tests.integration.harness import (
    DEFAULT_TENANT,
    REPO,
    RunningServer,
    free_port,
    running_server,
    stop_process,
    write_config,
)

UNIT = REPO / "deploy" / "pbx.service"
PBX = [sys.executable, "-m", "pbx"]


def pbx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PBX, *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


def unit_values(key: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in UNIT.read_text(encoding="utf-8").splitlines()
        if line.startswith(f"{key}=")
    ]


# --- the systemd unit -------------------------------------------------------------------------


def verify_unit(folder: Path, *drop_ins: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` of the unit (with these drop-ins) copied into ``folder``."""
    # verify checks that ExecStart's program exists: point it at this checkout's venv.
    venv_pbx = Path(sys.executable).parent / "pbx"
    assert venv_pbx.exists()
    text = UNIT.read_text(encoding="utf-8").replace("/opt/pbx/.venv/bin/pbx", str(venv_pbx))
    (folder / "pbx.service").write_text(text, encoding="utf-8")
    if drop_ins:
        (folder / "pbx.service.d").mkdir()
    for drop_in in drop_ins:
        shutil.copy(drop_in, folder / "pbx.service.d" / drop_in.name)
    return subprocess.run(
        ["systemd-analyze", "verify", str(folder / "pbx.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    done = verify_unit(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pbx.service" not in done.stderr, done.stderr  # no warning about our unit


def test_systemd_analyze_verify_accepts_the_kernel_forwarding_drop_in(tmp_path: Path) -> None:
    # issue #21: [media] kernel_forwarding needs CAP_NET_ADMIN and netlink, granted by a drop-in.
    drop_in = REPO / "deploy" / "pbx.service.d" / "kernel-forwarding.conf"
    done = verify_unit(tmp_path, drop_in)
    assert done.returncode == 0, done.stderr
    assert "kernel-forwarding.conf" not in done.stderr, done.stderr  # read, and no warning
    lines = drop_in.read_text(encoding="utf-8").splitlines()
    assert "AmbientCapabilities=CAP_NET_ADMIN" in lines
    assert "CapabilityBoundingSet=CAP_NET_ADMIN" in lines
    assert "RestrictAddressFamilies=AF_NETLINK" in lines


def test_the_unit_runs_as_its_own_user_restarts_and_is_hardened() -> None:
    for key, value in {
        "User": "pbx",
        "Restart": "on-failure",
        "StateDirectory": "pbx",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ReadWritePaths": "/etc/pbx/tenants",
        "CapabilityBoundingSet": "",
    }.items():
        assert unit_values(key) == [value], key
    assert unit_values("AmbientCapabilities") == []  # the default ports are above 1024
    sysusers = (REPO / "deploy" / "pbx.sysusers").read_text(encoding="utf-8")
    assert re.search(r"^u pbx - .* /var/lib/pbx ", sysusers, re.M)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # A fixed admin port: `pbx reload` finds the server by [admin] listen.
    admin = free_port(socket.SOCK_STREAM)
    config = write_config(tmp_path_factory.mktemp("deploy") / "pbx", admin_port=admin)
    with running_server(config) as running:
        yield running


def exec_reload(config: Path) -> subprocess.CompletedProcess[str]:
    """The unit's ExecReload command line, with its paths put to this test's server."""
    (line,) = unit_values("ExecReload")
    argv = shlex.split(line)
    assert argv[0] == "/opt/pbx/.venv/bin/pbx"
    argv = [*PBX, *[str(config) if a == "/etc/pbx/pbx.toml" else a for a in argv[1:]]]
    assert str(config) in argv
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


def test_the_units_exec_reload_reloads_a_running_server_and_an_unchanged_one_keeps_its_version(
    server: RunningServer,
) -> None:
    _, before = server.admin_request("GET", "/status")
    same = exec_reload(server.config)
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith(f"unchanged: configuration version {before['config_version']} ")
    _, status = server.admin_request("GET", "/status")
    assert status["config_version"] == before["config_version"]

    tenant = server.config.parent / "tenants" / "acme.toml"
    tenant.write_text(DEFAULT_TENANT.replace("secret1004", "changed1004"), encoding="utf-8")
    try:
        changed = exec_reload(server.config)
        assert changed.returncode == 0, changed.stderr
        version = before["config_version"] + 1
        assert changed.stdout.startswith(f"reloaded: configuration version {version} ")
        _, status = server.admin_request("GET", "/status")
        assert status["config_version"] == version
        metrics = server.metrics()
        assert metrics['pbx_reloads_total{result="unchanged"}'] == 1
    finally:
        tenant.write_text(DEFAULT_TENANT, encoding="utf-8")


def test_metrics_carry_every_drop_reason_and_the_rtp_ports_figure_of_status(
    server: RunningServer,
) -> None:
    metrics = server.metrics()
    for reason in ("banned", "throttled", "keepalive", "malformed", "stray_response"):
        assert f'pbx_sip_messages_dropped_total{{reason="{reason}"}}' in metrics, reason
    assert "pbx_sip_messages_dropped_total" not in metrics  # never without its label
    _, status = server.admin_request("GET", "/status")
    assert metrics["pbx_rtp_ports_in_use"] == status["rtp_ports_in_use"] == 0
    assert not any(name.startswith("pbx_media_ports") for name in metrics)


def test_pbx_status_into_a_closed_pipe_ends_quietly(server: RunningServer) -> None:
    # `pbx status | head`: the reader has gone when pbx writes.
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [*PBX, "status", "--config", str(server.config)],
            cwd=REPO,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert done.stderr == ""  # no traceback, no "cannot reach the server"
    assert done.returncode == 141
    piped = subprocess.run(
        f"{shlex.join([*PBX, 'status', '--config', str(server.config)])} | head -1",
        shell=True,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert piped.stdout.startswith("pbx ")
    assert piped.stderr == ""


# --- journald ---------------------------------------------------------------------------------

LOG_SCRIPT = """
import structlog
from pbx.log import configure_logging
configure_logging("info")
log = structlog.get_logger("t")
log.warning("config_warning", warning="a b")
log.info("server_started", port=5060)
log.debug("hidden")
"""


def test_under_systemd_log_lines_carry_the_journal_priority_and_no_timestamp(
    tmp_path: Path,
) -> None:
    out = tmp_path / "stderr"
    with out.open("wb") as fh:
        stat = os.fstat(fh.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        subprocess.run([sys.executable, "-c", LOG_SCRIPT], cwd=REPO, stderr=fh, env=env, check=True)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines == ["<4>config_warning warning='a b'", "<6>server_started port=5060"]
    # Elsewhere (stderr not the journal's stream): JSON lines with a timestamp, as before.
    with out.open("wb") as fh:
        env = {**os.environ, "JOURNAL_STREAM": "1:2"}
        subprocess.run([sys.executable, "-c", LOG_SCRIPT], cwd=REPO, stderr=fh, env=env, check=True)
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert first["event"] == "config_warning"
    assert "timestamp" in first


# --- the demo passwords -----------------------------------------------------------------------


def demo_copy(root: Path, listen: str) -> Path:
    (root / "tenants").mkdir(parents=True)
    shutil.copy(REPO / "config" / "tenants" / "acme.toml", root / "tenants" / "acme.toml")
    text = (REPO / "config" / "pbx.toml").read_text(encoding="utf-8")
    text = re.sub(r"^listen = \[.*\]$", f"listen = {listen}", text, count=1, flags=re.M)
    text = text.replace('"127.0.0.1:8088"', '"127.0.0.1:0"').replace('"../data"', '"data"')
    text += '\n[panel]\nlisten = "127.0.0.1:0"\n'
    (root / "pbx.toml").write_text(text, encoding="utf-8")
    return root / "pbx.toml"


def test_the_demo_passwords_are_those_of_the_demo_tenant_file() -> None:
    demo = load_config(REPO / "config" / "pbx.toml")
    users = demo.tenants["acme"].users  # type: ignore[index]
    assert {u.password for u in users.values()} == DEMO_PASSWORDS
    assert demo_password_refusal(demo) is None  # the demo listens on loopback only


def test_pbx_run_refuses_demo_passwords_on_a_public_address(tmp_path: Path) -> None:
    config = demo_copy(tmp_path, '["udp:0.0.0.0:0"]')
    done = pbx("run", "--config", str(config))
    assert done.returncode == 1
    assert "refusing to start: acme/1001, acme/1002, acme/1003, acme/1004" in done.stderr
    assert "udp:0.0.0.0:0" in done.stderr
    assert "--allow-demo-passwords" in done.stderr
    # A hash of a demo password is the same password.
    tenant = tmp_path / "tenants" / "acme.toml"
    tenant.write_text(
        tenant.read_text(encoding="utf-8").replace(
            'password = "acme-1004-secret"',
            'password_ha1_md5 = "' + _ha1("1004", "acme.example", "acme-1004-secret") + '"',
        ),
        encoding="utf-8",
    )
    refusal = demo_password_refusal(load_config(config))
    assert refusal is not None
    assert "acme/1004" in refusal


def _ha1(ext: str, realm: str, password: str) -> str:
    import hashlib

    return hashlib.md5(f"{ext}:{realm}:{password}".encode()).hexdigest()


def test_allow_demo_passwords_starts_anyway_with_a_warning(tmp_path: Path) -> None:
    config = demo_copy(tmp_path, '["udp:0.0.0.0:0"]')
    process = subprocess.Popen(
        [*PBX, "run", "--config", str(config), "--log-json", "--allow-demo-passwords"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    events = []
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        for raw in process.stderr:
            events.append(json.loads(raw)["event"])
            if events[-1] == "server_started" or time.monotonic() > deadline:
                break
    finally:
        stop_process(process)
    assert "demo_passwords_allowed" in events
    assert events[-1] == "server_started"


# --- scripts/run.sh installs once -------------------------------------------------------------


def test_run_sh_installs_once_then_starts_without_pip_until_pyproject_changes(
    tmp_path: Path,
) -> None:
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    for name in ("_env.sh", "run.sh"):
        shutil.copy(REPO / "scripts" / name, root / "scripts" / name)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n", encoding="utf-8")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.log"
    # Stand-ins that record how they were called: python (pip) and the pbx entry point.
    (bin_dir / "python").write_text(f'#!/bin/sh\necho "python $*" >> {log}\n', encoding="utf-8")
    (bin_dir / "pbx").write_text(f'#!/bin/sh\necho "pbx $*" >> {log}\n', encoding="utf-8")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)

    def run() -> list[str]:
        log.write_text("", encoding="utf-8")
        subprocess.run(["bash", "scripts/run.sh", "--log-level", "debug"], cwd=root, check=True)
        return log.read_text(encoding="utf-8").splitlines()

    first = run()
    assert "python -m pip install -q -e ." in first
    assert first[-1] == "pbx run --config config/pbx.toml --log-level debug"
    assert run() == ["pbx run --config config/pbx.toml --log-level debug"]  # no pip at all
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '2'\n")
    assert "python -m pip install -q -e ." in run()
    assert run() == ["pbx run --config config/pbx.toml --log-level debug"]


# --- backup, restore, pbx calls ---------------------------------------------------------------

T0 = 1_796_000_000.0  # 2026-11-30 09:53:20 in Asia/Tokyo


def _records(data: Path) -> list[CallRecord]:
    recording = data / "recordings" / "c2.wav"
    return [
        CallRecord(
            "c1", "acme", T0, "0311112222", "0312345678", T0 + 2, T0 + 62, "answered", "1001"
        ),
        CallRecord(
            "c2",
            "acme",
            T0 + 100,
            "1001",
            "1002",
            T0 + 103,
            T0 + 133,
            "answered",
            "1002",
            forwarding=({"from": "1003", "to": "1002"},),
            recording_path=str(recording),
        ),
        CallRecord("c3", "acme", T0 + 86_400, "1004", "1003", None, T0 + 86_420, "no_answer"),
    ]


def _fill(data: Path) -> None:
    (data / "recordings").mkdir(parents=True, exist_ok=True)
    (data / "recordings" / "c2.wav").write_bytes(b"RIFF" + bytes(range(256)) * 40)

    async def write() -> None:
        store = await Store.open(data / "pbx.sqlite3")
        try:
            for record in _records(data):
                await store.close_call(record)
        finally:
            await store.close()

    asyncio.run(write())


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    config = write_config(tmp_path / "pbx")
    _fill(tmp_path / "pbx" / "data")
    return config


def calls(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return pbx("calls", "--config", str(config), *args)


def test_pbx_calls_lists_and_filters_records_as_json_lines(filled: Path) -> None:
    done = calls(filled)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["c3", "c2", "c1"]  # newest first
    c2 = rows[1]
    assert c2["started_at"] == "2026-11-30T09:55:00+09:00"
    assert (c2["caller"], c2["answered_by"], c2["talk_seconds"]) == ("1001", "1002", 30.0)
    assert c2["recording"].endswith("data/recordings/c2.wav")
    assert c2["forwarding"] == [{"from": "1003", "to": "1002"}]

    def ids(*a: str) -> list[str]:
        return [json.loads(x)["id"] for x in calls(filled, *a).stdout.splitlines()]

    assert ids("--extension", "1003") == ["c3"]
    assert ids("--number", "03-1111-2222") == ["c1"]
    assert ids("--disposition", "no_answer") == ["c3"]
    assert ids("--from", "2026-12-01") == ["c3"]
    assert ids("--to", "2026-11-30") == ["c2", "c1"]
    assert ids("--limit", "1") == ["c3"]


def test_pbx_calls_writes_csv_and_names_a_bad_filter(filled: Path) -> None:
    done = calls(filled, "--format", "csv", "--extension", "1002")
    table = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["id"], r["disposition"], r["talk_seconds"]) for r in table] == [
        ("c2", "answered", "30.0")
    ]
    bad = calls(filled, "--extension", "12", "--from", "yesterday")
    assert bad.returncode == 2
    assert "--from: bad date" in bad.stderr
    assert "--extension: bad extension" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_backup_while_running_and_restore_into_a_new_data_folder(
    filled: Path, tmp_path: Path
) -> None:
    data = filled.parent / "data"
    # The server holds the database open (WAL) while the backup is taken.
    with running_server(filled):
        dest = tmp_path / "backup"
        done = pbx("backup", "--config", str(filled), str(dest))
        assert done.returncode == 0, done.stderr
    assert "3 call records; integrity ok" in done.stdout
    assert pbx("backup", "--config", str(filled), str(dest)).returncode == 1  # not empty
    # Restore as the README says: stop the server, copy the files back into an empty data folder.
    shutil.rmtree(data)
    data.mkdir()
    shutil.copy(dest / "pbx.sqlite3", data / "pbx.sqlite3")
    shutil.copytree(dest / "recordings", data / "recordings")
    with sqlite3.connect(data / "pbx.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = [json.loads(line) for line in calls(filled).stdout.splitlines()]
    assert [r["id"] for r in rows] == ["c3", "c2", "c1"]
    assert Path(rows[1]["recording"]).read_bytes() == b"RIFF" + bytes(range(256)) * 40
    assert (dest / "config" / "pbx.toml").read_bytes() == filled.read_bytes()
    assert (dest / "config" / "tenants" / "acme.toml").exists()
    with running_server(filled) as restarted:  # the restored folder runs
        assert restarted.admin_request("GET", "/status")[0] == 200
