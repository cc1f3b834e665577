"""The local cluster of scripts/cluster.sh (issue #20): the Kamailio edge in front of two nodes.

One module-scoped cluster (two pbx nodes with their own SQLite, the edge dispatching to them):
a phone registered through the edge is reachable from a carrier call landing on either node and
through the edge; after ``kill -9`` of one node, a call held by the other stays up and new calls
succeed through the survivor within the edge's probe interval.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import REPO, SIPP_DIR, free_port
from tests.integration.test_calls import Sipps, register_args, sipp_args, wait_for

pytestmark = pytest.mark.integration

EDGE_IP = "127.0.0.10"
NODE_IPS = ("127.0.0.11", "127.0.0.12")
PHONE_IP = "127.0.0.20"
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

[[users]]
extension = "1002"
password = "secret1002"
caller_id = "0312345678"

[[incoming]]
number = "0312345678"
targets = "1002"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]
start = "0:00"
end = "23:59"
"""


@dataclass
class Cluster:
    run: Path
    edge: tuple[str, int]
    nodes: tuple[tuple[str, int], ...]
    phone_port: int

    def node_pid(self, index: int) -> int:
        return int((self.run / f"node{index + 1}.pid").read_text())

    def calls(self, index: int) -> list[dict[str, Any]]:
        url = f"http://{self.nodes[index][0]}:8088/calls"
        with urllib.request.urlopen(url, timeout=5) as response:
            calls: list[dict[str, Any]] = json.load(response)
        return calls

    def registrations(self, index: int) -> list[dict[str, Any]]:
        url = f"http://{self.nodes[index][0]}:8088/registrations"
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
    env = {
        **os.environ,
        "PBX_CLUSTER_RUN": str(root / "run"),
        "PBX_PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
        "PBX_EDGE_PORT": str(edge_port),
        "PBX_NODE_PORT": str(node_port),
        "PROBE_INTERVAL": str(PROBE_INTERVAL),
    }
    try:
        out = cluster_sh(
            root / "run", env, "up", "--nodes", "2", "--tenants", str(root / "tenants"),
            "--trunk", f"{CARRIER_IP}:5080",
        )  # fmt: skip
        assert f"edge: sip:{EDGE_IP}:{edge_port}" in out
        assert f"node2: sip:{NODE_IPS[1]}:{node_port} admin: http://{NODE_IPS[1]}:8088" in out
        nodes = tuple((ip, node_port) for ip in NODE_IPS)
        yield Cluster(root / "run", (EDGE_IP, edge_port), nodes, free_port(host=PHONE_IP))
    finally:
        cluster_sh(root / "run", env, "down")
    for name in ("kamailio", "node1", "node2"):
        assert not (root / "run" / f"{name}.pid").exists()


def register_phone(cluster: Cluster, sipps: Sipps) -> None:
    """1002 registers through the edge (SIPp, digest); the edge forks it to both nodes."""
    args = register_args(cluster.edge, PHONE_IP, cluster.phone_port, "1002", "secret1002")
    done = subprocess.run(args, cwd=sipps.workdir, capture_output=True, text=True, timeout=40)
    assert done.returncode == 0, done.stdout + done.stderr
    for index in (0, 1):
        found = wait_for(f"1002 on node{index + 1}", partial(cluster.registrations, index))
        # The real source (the edge's Via received/rport), not the edge's address.
        assert found[0]["source"] == f"{PHONE_IP}:{cluster.phone_port}"


def answering_phone(cluster: Cluster, sipps: Sipps) -> None:
    args = sipp_args(
        SIPP_DIR / "phone_answer.xml",
        cluster.edge,
        local_ip=PHONE_IP,
        port=cluster.phone_port,
        service="1002",
    )
    sipps.start("phone", args, bound=(PHONE_IP, cluster.phone_port))


def carrier_call(sipps: Sipps, target: tuple[str, int], hold_ms: int = 300) -> None:
    args = sipp_args(
        SIPP_DIR / "carrier_call.xml",
        target,
        local_ip=CARRIER_IP,
        port=free_port(host=CARRIER_IP),
        service="0312345678",
        extra=["-d", str(hold_ms)],
    )
    sipps.start(f"carrier->{target}", args)


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


def test_kill_9_of_one_node_leaves_the_others_calls_up_and_new_calls_go_to_the_survivor(
    cluster: Cluster, sipps: Sipps
) -> None:
    register_phone(cluster, sipps)
    answering_phone(cluster, sipps)
    carrier_call(sipps, cluster.edge, hold_ms=6000)  # a call held for 6 s through the edge
    holder = wait_for(
        "the call on a node",
        lambda: (
            next((i for i in (0, 1) if cluster.calls(i)), None) is not None
            and next(i for i in (0, 1) if cluster.calls(i)) + 1
        ),
    )
    survivor, victim = holder - 1, 2 - holder
    os.kill(cluster.node_pid(victim), signal.SIGKILL)
    killed_at = time.monotonic()
    sipps.wait_all(timeout=40)  # the held call ended normally (its BYE through the edge)
    # New calls through the edge, once the probe interval has passed, all reach the survivor.
    time.sleep(max(0.0, PROBE_INTERVAL * 2 - (time.monotonic() - killed_at)))
    for _ in range(2):
        group = Sipps(sipps.workdir)
        try:
            answering_phone(cluster, group)
            carrier_call(group, cluster.edge)
            group.wait_all(timeout=40)
        finally:
            group.close()
    assert cluster.calls(survivor) == []
