"""The local cluster of scripts/cluster.sh (issue #20): the Kamailio edge in front of two nodes
on one PostgreSQL.

One module-scoped cluster (a private PostgreSQL, two pbx nodes sharing it, the edge dispatching
to them; the edge sends a REGISTER to one node only): a phone registered through the edge is
known to both nodes (the shared bindings) and reachable from a carrier call landing on either
node and through the edge, and each call is one row of the one database, with the node that
held it. After ``kill -9`` of one node, the call held by the other stays up, new calls succeed
through the survivor within the edge's probe interval, the killed node's call stays open in the
database (the survivor leaves it alone) until that node starts again and closes it as a crash.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.harness import REPO, SIPP_DIR, free_port
from tests.integration.test_calls import Sipps, register_args, sipp_args, wait_for

pytestmark = pytest.mark.integration

EDGE_IP = "127.0.0.10"
NODE_IPS = ("127.0.0.11", "127.0.0.12")
PHONE_IP = "127.0.0.20"
PHONE2_IP = "127.0.0.21"
CARRIER_IP = "127.0.0.2"
PROBE_INTERVAL = 1
TENANT = """
[tenant]
domain = "acme.example"
timezone = "Asia/Tokyo"
default = true
qualify_seconds = 0

[limits]
max_users = 10

[[numbers]]
number = "0312345678"

[[numbers]]
number = "0312345679"

[[users]]
extension = "1002"
password = "secret1002"
caller_id = "0312345678"

[[users]]
extension = "1003"
password = "secret1003"
caller_id = "0312345679"

[[incoming]]
number = "0312345678"
targets = "1002"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]
start = "0:00"
end = "23:59"

[[incoming]]
number = "0312345679"
targets = "1003"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]
start = "0:00"
end = "23:59"
"""
PHONES = {"1002": (PHONE_IP, "secret1002"), "1003": (PHONE2_IP, "secret1003")}
NUMBERS = {"1002": "0312345678", "1003": "0312345679"}


@dataclass
class Cluster:
    run: Path
    edge: tuple[str, int]
    nodes: tuple[tuple[str, int], ...]
    phone_port: int
    admin_port: int
    env: dict[str, str]

    @property
    def database(self) -> str:
        return (self.run / "postgres.url").read_text().strip()

    def rows(self) -> list[dict[str, Any]]:
        """Every call record in the one database, oldest first."""
        with psycopg.connect(self.database) as conn:
            cursor = conn.execute(
                "SELECT node, called, disposition, answered_at, ended_at, hangup_cause,"
                " caller_call_id, trace FROM call_records ORDER BY started_at, id"
            )
            names = [column.name for column in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def log_events(self, index: int, name: str, file: str = "pbx.log") -> list[dict[str, Any]]:
        found = []
        for line in (self.run / f"node{index + 1}" / file).read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
        return found

    def node_pid(self, index: int) -> int:
        return int((self.run / f"node{index + 1}.pid").read_text())

    def calls(self, index: int) -> list[dict[str, Any]]:
        url = f"http://{self.nodes[index][0]}:{self.admin_port}/calls"
        with urllib.request.urlopen(url, timeout=5) as response:
            calls: list[dict[str, Any]] = json.load(response)
        return calls

    def registrations(self, index: int) -> list[dict[str, Any]]:
        url = f"http://{self.nodes[index][0]}:{self.admin_port}/registrations"
        with urllib.request.urlopen(url, timeout=5) as response:
            found: list[dict[str, Any]] = json.load(response)
        return found


def cluster_sh(run: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "cluster.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"cluster.sh {args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    (root / "tenants").mkdir()
    (root / "tenants" / "acme.toml").write_text(TENANT, encoding="utf-8")
    edge_port = free_port(host=EDGE_IP)
    node_port = free_port(host=NODE_IPS[0])
    admin_port = free_port(socket.SOCK_STREAM, NODE_IPS[0])
    env = {
        **os.environ,
        "PBX_CLUSTER_RUN": str(root / "run"),
        "PBX_PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
        "PBX_EDGE_PORT": str(edge_port),
        "PBX_NODE_PORT": str(node_port),
        "PROBE_INTERVAL": str(PROBE_INTERVAL),
        # Other runs may hold a cluster on the same loopback addresses with the defaults.
        "PBX_ADMIN_PORT": str(admin_port),
        "PBX_PANEL_PORT": str(free_port(socket.SOCK_STREAM, NODE_IPS[0])),
        "PBX_RTP_BASE": "50000",
    }
    try:
        out = cluster_sh(
            root / "run", env, "up", "--nodes", "2", "--tenants", str(root / "tenants"),
            "--trunk", f"{CARRIER_IP}:5080",
        )  # fmt: skip
        assert f"edge: sip:{EDGE_IP}:{edge_port}" in out
        admin = f"admin: http://{NODE_IPS[1]}:{admin_port}"
        assert f"node2: sip:{NODE_IPS[1]}:{node_port} {admin}" in out
        database = (root / "run" / "postgres.url").read_text().strip()
        assert database.startswith("postgresql://")
        assert f"database: {database}" in out
        for index in (1, 2):
            config = (root / "run" / f"node{index}" / "pbx.toml").read_text()
            assert f'database = "{database}"\nnode = "node{index}"' in config
        nodes = tuple((ip, node_port) for ip in NODE_IPS)
        phone_port = free_port(host=PHONE_IP)
        yield Cluster(root / "run", (EDGE_IP, edge_port), nodes, phone_port, admin_port, env)
    finally:
        root_file = root / "run" / "postgres.root"
        pg_root = root_file.read_text().strip() if root_file.exists() else None
        cluster_sh(root / "run", env, "down")
    for name in ("kamailio", "node1", "node2", "postgres"):
        assert not (root / "run" / f"{name}.pid").exists()
    assert pg_root is not None
    assert not Path(pg_root).exists()  # PostgreSQL's folder went with it


def registered_on(cluster: Cluster, index: int, ext: str) -> list[dict[str, Any]]:
    return [b for b in cluster.registrations(index) if b["extension"] == ext]


def register_phone(cluster: Cluster, sipps: Sipps, ext: str = "1002") -> None:
    """``ext`` registers through the edge (SIPp, digest). The edge sends the REGISTER to one
    node; the other knows the binding through the shared store (``node`` names the first)."""
    ip, password = PHONES[ext]
    args = register_args(cluster.edge, ip, cluster.phone_port, ext, password)
    done = subprocess.run(args, cwd=sipps.workdir, capture_output=True, text=True, timeout=40)
    assert done.returncode == 0, done.stdout + done.stderr
    found = [
        wait_for(f"{ext} on node{index + 1}", partial(registered_on, cluster, index, ext))
        for index in (0, 1)
    ]
    for (binding,) in found:
        # The real source (the edge's Via received/rport), not the edge's address.
        assert binding["source"] == f"{ip}:{cluster.phone_port}"
    # One node took the REGISTER (its own binding: node null), the other names that node.
    owners = [binding["node"] for (binding,) in found]
    assert owners in ([None, "node1"], ["node2", None]), owners


def answering_phone(cluster: Cluster, sipps: Sipps, ext: str = "1002") -> None:
    ip = PHONES[ext][0]
    args = sipp_args(
        SIPP_DIR / "phone_answer.xml",
        cluster.edge,
        local_ip=ip,
        port=cluster.phone_port,
        service=ext,
    )
    sipps.start(f"phone {ext}", args, bound=(ip, cluster.phone_port))


def carrier_call(
    sipps: Sipps, target: tuple[str, int], hold_ms: int = 300, ext: str = "1002"
) -> None:
    args = sipp_args(
        SIPP_DIR / "carrier_call.xml",
        target,
        local_ip=CARRIER_IP,
        port=free_port(host=CARRIER_IP),
        service=NUMBERS[ext],
        extra=["-d", str(hold_ms)],
    )
    sipps.start(f"carrier->{target} ({ext})", args)


def closed_rows(cluster: Cluster, before: int, count: int) -> list[dict[str, Any]]:
    """The ``count`` rows written after the first ``before``, once all are closed."""

    def check() -> list[dict[str, Any]] | None:
        rows = cluster.rows()[before:]
        if len(rows) >= count and all(r["ended_at"] is not None for r in rows):
            return rows
        return None

    rows: list[dict[str, Any]] = wait_for(f"{count} closed call records", check)
    return rows


@pytest.fixture
def sipps(tmp_path: Path) -> Iterator[Sipps]:
    group = Sipps(tmp_path)
    try:
        yield group
    finally:
        group.close()


def test_a_phone_registered_through_the_edge_is_reached_from_either_node(
    cluster: Cluster, sipps: Sipps
) -> None:
    before = len(cluster.rows())
    register_phone(cluster, sipps)
    # A carrier call landing straight on each node, then one through the edge: each rings the
    # phone through the edge (the binding's Path) and is answered.
    for target in (*cluster.nodes, cluster.edge):
        group = Sipps(sipps.workdir)
        try:
            answering_phone(cluster, group)
            carrier_call(group, target)
            group.wait_all(timeout=40)
        finally:
            group.close()
    # One database, one row per call, each with the node that held it.
    rows = closed_rows(cluster, before, 3)
    assert len(rows) == 3, rows
    assert len({r["caller_call_id"] for r in rows}) == 3
    assert [r["node"] for r in rows[:2]] == ["node1", "node2"]
    assert rows[2]["node"] in ("node1", "node2")
    assert {(r["called"], r["disposition"]) for r in rows} == {("0312345678", "answered")}


def test_kill_9_of_one_node_leaves_the_others_calls_up_and_new_calls_go_to_the_survivor(
    cluster: Cluster, sipps: Sipps
) -> None:
    survivor, victim = 0, 1
    before = len(cluster.rows())
    register_phone(cluster, sipps, "1002")
    register_phone(cluster, sipps, "1003")
    # A call held on each node: the carrier straight to node1 for 1002, to node2 for 1003.
    held = Sipps(sipps.workdir)
    lost = Sipps(sipps.workdir)
    try:
        answering_phone(cluster, held, "1002")
        answering_phone(cluster, lost, "1003")
        carrier_call(held, cluster.nodes[survivor], hold_ms=5000, ext="1002")
        carrier_call(lost, cluster.nodes[victim], hold_ms=5000, ext="1003")
        wait_for("a call up on each node", lambda: cluster.calls(0) and cluster.calls(1))
        wait_for(
            "both calls answered in the database",
            lambda: sum(r["answered_at"] is not None for r in cluster.rows()[before:]) == 2,
        )
        os.kill(cluster.node_pid(victim), signal.SIGKILL)
        killed_at = time.monotonic()
        assert cluster.calls(survivor), "the survivor's call is still up"
        held.wait_all(timeout=40)  # the survivor's call ended normally, after its 5 s
    finally:
        held.close()
        lost.close()
    # New calls through the edge, once the probe interval has passed, all reach the survivor,
    # without waiting out a transaction timeout on the dead node first (fr_timer 5 s).
    time.sleep(max(0.0, PROBE_INTERVAL * 2 - (time.monotonic() - killed_at)))
    for _ in range(2):
        group = Sipps(sipps.workdir)
        try:
            answering_phone(cluster, group)
            started = time.monotonic()
            carrier_call(group, cluster.edge)
            group.wait_all(timeout=40)
            assert time.monotonic() - started < 4.5
        finally:
            group.close()
    assert cluster.calls(survivor) == []
    rows = cluster.rows()[before:]
    assert len(rows) == 4, rows  # one row per call: the two held, the two new
    assert len({r["caller_call_id"] for r in rows}) == 4

    def survivor_rows_closed() -> bool:
        mine = [r for r in cluster.rows()[before:] if r["node"] == "node1"]
        return all(r["ended_at"] is not None for r in mine)

    wait_for("the survivor's calls closed", survivor_rows_closed)
    rows = cluster.rows()[before:]
    (crashed,) = [r for r in rows if r["node"] == "node2"]
    assert crashed["called"] == "0312345679"
    # The survivor leaves the killed node's open row alone.
    assert crashed["ended_at"] is None
    assert crashed["hangup_cause"] is None
    assert [r["node"] for r in rows if r is not crashed] == ["node1"] * 3
    for row in rows:
        if row is not crashed:
            assert (row["disposition"], row["hangup_cause"] == "crash") == ("answered", False)
    assert cluster.log_events(survivor, "call_records_recovered") == []
    # The killed node starts again and closes its own row as a crash.
    out = cluster_sh(cluster.run, cluster.env, "start-node", str(victim + 1))
    assert f"node{victim + 1} started again" in out
    (recovered,) = cluster.log_events(victim, "call_records_recovered")
    assert (recovered["count"], recovered["node"]) == (1, "node2")
    (closed,) = [r for r in cluster.rows()[before:] if r["node"] == "node2"]
    assert (closed["disposition"], closed["hangup_cause"]) == ("answered", "crash")
    assert closed["ended_at"] is not None
    assert json.loads(closed["trace"])[-1].startswith("closed at start-up")
    assert cluster.log_events(survivor, "call_records_recovered") == []
