"""One pbx node against the Kamailio edge with two nodes: registrations/s and calls/s, same run.

    python -m loadtests.bench_cluster [--seconds 30] [--register-rates 500,1000,...]
                                      [--call-rates 100,200,...] [--users-per-tenant 5000]
                                      [--only one,cluster] [--quick]

Loopback only (issue #20). Two set-ups, one after the other, on the same configuration (10,000
users in two generated tenants, ``bench_register.write_load_config``; the acme tenant of
``bench_calls`` whose number 0312345678 rings 1001; keep-alive OPTIONS off, the per-source rate
limit, ban threshold and per-user call cap lifted, since all the load comes from 127.0.0.1):

- ``one``: one ``pbx run`` on 127.0.0.1, driven directly;
- ``cluster``: ``scripts/cluster.sh up --nodes 2`` (the Kamailio edge on 127.0.0.10 in front of
  nodes on 127.0.0.11 and .12, sharing the nonce key), driven through the edge only.

In each, 1001 registers first (``bench_calls.register``), then two ladders run, each step judged
exactly like the benchmark it comes from:

1. authenticated registrations (``bench_register.run_step``: REGISTER, 401, REGISTER with digest,
   200, the users in sequence, the phones keeping one address): pass = every registration
   succeeded, < 0.1 % retransmitted, SIPp kept the rate (3 % + 1 s);
2. signalling-only calls (``bench_calls.run_step``: the carrier SIPp on 127.0.0.2 calls
   0312345678, the SIPp phone 1001 answers): pass = no failed call on either side, < 0.1 %
   retransmissions, INVITE->200 p99 < 100 ms.

A failed step is tried once more (the machine may be shared: each line shows the load average).

Each ladder stops at its first failing step. Every step prints, next to its verdict, the CPU of
every process over the step in % of one core, read from /proc/<pid>/stat: each pbx node, the
Kamailio processes (the main one and all it forked: their sum, count and busiest), and the SIPps
of the step (both sides; their CPU comes from ``getrusage(RUSAGE_CHILDREN)`` once they are
reaped). The machine has 2 cores: the sum of these is bounded by 200 %.

Through the edge, an authenticated REGISTER is forked to every node (so that a call landing on
any node finds the phone): registrations do not spread, every node does each one's 200.

Every process is started here (or by cluster.sh) and ended by its pid (``cluster.sh down``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from loadtests import bench_calls, bench_register
from tests.integration.harness import REPO, free_port

EDGE_IP = "127.0.0.10"
NODE_IPS = ("127.0.0.11", "127.0.0.12")
CARRIER_TRUNK = f"{bench_calls.CARRIER_IP}:5080"
REGISTER_RATES = (500, 750, 1000, 1250, 1500, 1750, 2000)
CALL_RATES = (100, 200, 300, 400, 500, 600)
QUICK_REGISTER_RATES = (20,)
QUICK_CALL_RATES = (5,)
QUICK_USERS = 50
QUICK_SECONDS = 2

# Appended to every node's pbx.toml (cluster.sh --extra) and to the one node's.
NODE_EXTRA = """
[security]
# All the load comes from 127.0.0.1: lift the per-source defences.
max_requests_per_second = 1000000
ban_after_failures = 1000000

[calls]
max_calls_per_user = 1000000
"""


# --- CPU of every process -----------------------------------------------------------------------


def descendants(root: int) -> list[int]:
    """``root`` and every process it forked (by parent pid, from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together, from /proc/stat (idle and iowait not busy)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - fields[3] - fields[4], total


def reaped_children_cpu() -> float:
    """CPU seconds of this process's children that have ended and been waited for (SIPps)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Watched:
    """The long-running processes of a set-up: name -> pids (kamailio: all its processes)."""

    groups: dict[str, list[int]]

    def snapshot(self) -> dict[int, float]:
        found: dict[int, float] = {}
        for pids in self.groups.values():
            for pid in pids:
                cpu = bench_register.cpu_seconds(pid)
                if cpu is not None:
                    found[pid] = cpu
        return found


@dataclass
class CpuUse:
    """% of one core over a step, per process group."""

    groups: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    busiest: dict[str, float] = field(default_factory=dict)
    machine: float | None = None  # every process of the machine, % of one core

    @property
    def total(self) -> float:
        return sum(self.groups.values())

    def line(self) -> str:
        parts = []
        for name, pct in self.groups.items():
            text = f"{name} {pct:.0f} %"
            if self.counts.get(name, 1) > 1:
                text += f" ({self.counts[name]} processes, busiest {self.busiest[name]:.0f} %)"
            parts.append(text)
        line = "cpu " + ", ".join(parts) + f"; sum {self.total:.0f} % of {100 * CPUS} %"
        if self.machine is not None:
            others = max(0.0, self.machine - self.total)
            line += f"; machine {self.machine:.0f} % (other work {others:.0f} %)"
        return line


CPUS = os.cpu_count() or 1
T = TypeVar("T")


def measured(watched: Watched, run: Callable[[], T]) -> tuple[T, CpuUse]:
    """Run one step; the CPU % of every watched process and of the step's SIPps over it."""
    before, sipp_before = watched.snapshot(), reaped_children_cpu()
    busy_before, total_before = machine_busy()
    started = time.monotonic()
    result = run()
    wall = time.monotonic() - started
    after, sipp_after = watched.snapshot(), reaped_children_cpu()
    busy_after, total_after = machine_busy()
    use = CpuUse()
    if total_after > total_before:
        use.machine = 100 * CPUS * (busy_after - busy_before) / (total_after - total_before)
    for name, pids in watched.groups.items():
        per = [100 * (after[p] - before[p]) / wall for p in pids if p in before and p in after]
        use.groups[name] = sum(per)
        use.counts[name] = len(pids)
        use.busiest[name] = max(per, default=0.0)
    use.groups["sipp"] = 100 * (sipp_after - sipp_before) / wall
    return result, use


# --- configuration --------------------------------------------------------------------------------


def write_tenants(root: Path, users_per_tenant: int) -> tuple[Path, Path]:
    """The load tenants (keep-alive off) and the acme tenant in ``root/tenants``; returns
    (tenants folder, users CSV)."""
    _, users = bench_register.write_load_config(root, 0, users_per_tenant)
    tenants = root / "tenants"  # keep-alives off in every tenant (write_load_config)
    acme = bench_calls.TENANT.replace("default = true", "default = false")  # keep-alives off
    (tenants / "acme.toml").write_text(acme, encoding="utf-8")
    (root / "pbx.toml").unlink()
    return tenants, users


def write_one_node_config(root: Path, tenants: Path, port: int) -> Path:
    node = root / "one"
    (node / "data").mkdir(parents=True)
    shutil.copytree(tenants, node / "tenants")
    config = node / "pbx.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [sip]
            listen = ["udp:{bench_calls.PHONE_IP}:{port}"]

            [admin]
            listen = "{bench_calls.PHONE_IP}:0"

            [storage]
            data_dir = "data"

            [media]
            rtp_ports = "23000-23999"

            [[trunks]]
            name = "carrier"
            address = "{CARRIER_TRUNK}"
            """
        )
        + NODE_EXTRA,
        encoding="utf-8",
    )
    return config


# --- set-ups --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    name: str
    target: tuple[str, int]  # where SIPp sends
    watched: Watched
    measured_pid: int  # the pid whose CPU the borrowed step functions report (node 1)


@contextlib.contextmanager
def one_node(root: Path, tenants: Path) -> Iterator[Setup]:
    port = free_port(host=bench_calls.PHONE_IP)
    config = write_one_node_config(root, tenants, port)
    with bench_register.pbx_server(config, port, root / "one" / "pbx.log", "info") as pid:
        yield Setup("one", (bench_calls.PHONE_IP, port), Watched({"pbx": [pid]}), pid)


def cluster_sh(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "cluster.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cluster.sh {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@contextlib.contextmanager
def two_nodes(root: Path, tenants: Path) -> Iterator[Setup]:
    """``cluster.sh up --nodes 2`` on free ports; ``cluster.sh down`` whatever happens."""
    run = root / "cluster"
    extra = root / "node-extra.toml"
    extra.write_text(NODE_EXTRA, encoding="utf-8")
    edge_port = free_port(host=EDGE_IP)
    env = {
        **os.environ,
        "PBX_CLUSTER_RUN": str(run),
        "PBX_PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
        "PBX_EDGE_PORT": str(edge_port),
        "PBX_NODE_PORT": str(free_port(host=NODE_IPS[0])),
    }
    try:
        out = cluster_sh(
            env, "up", "--nodes", "2", "--tenants", str(tenants),
            "--trunk", CARRIER_TRUNK, "--extra", str(extra),
        )  # fmt: skip
        print("  " + out.strip().replace("\n", "\n  "), flush=True)
        nodes = [int((run / f"node{i}.pid").read_text()) for i in (1, 2)]
        kamailio = descendants(int((run / "kamailio.pid").read_text()))
        watched = Watched({"node1": [nodes[0]], "node2": [nodes[1]], "kamailio": kamailio})
        yield Setup("cluster", (EDGE_IP, edge_port), watched, nodes[0])
    finally:
        cluster_sh(env, "down")


# --- ladders --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Best:
    rate: int
    achieved: float
    cpu: CpuUse


def register_ladder(
    setup: Setup, users: Path, rates: Sequence[int], seconds: int, workdir: Path, deadline: float
) -> Best | None:
    """Step up through ``rates`` (registrations/s); the highest passing step (None if none)."""
    best = None
    phones_port = free_port(host=bench_calls.PHONE_IP)  # one address: steps refresh bindings
    for rate in rates:
        last: bench_register.Step | None = None
        for attempt in range(2):  # a failed step is tried once more (the machine is shared)
            if time.monotonic() + seconds * 1.5 + 10 > deadline:
                print(f"  {setup.name}: time budget reached before {rate}/s", flush=True)
                return best
            step, cpu = measured(
                setup.watched,
                partial(
                    bench_register.run_step, setup.target[1], users, rate, seconds, workdir,
                    setup.measured_pid, phones_port, host=setup.target[0],
                ),
            )  # fmt: skip
            verdict = "pass" if step.passed else "FAIL"
            print(
                f"  {setup.name:7} register {rate:5d}/s  achieved {step.achieved:6.0f}/s"
                f"  ok {step.succeeded}/{step.planned}  failed {step.failed}"
                f"  retrans {100 * step.retransmission_ratio:.3f} %"
                f"  mean {step.response_ms:.1f} ms  {verdict}{' (again)' if attempt else ''}"
                f"  {cpu.line()}  (load {os.getloadavg()[0]:.2f})",
                flush=True,
            )
            last = step
            if step.passed:
                break
        if last is None or not last.passed:
            break
        best = Best(rate, last.achieved, cpu)
    return best


def call_ladder(
    setup: Setup,
    phone_port: int,
    rates: Sequence[int],
    seconds: int,
    workdir: Path,
    deadline: float,
    warmup: bool,
) -> Best | None:
    """Step up through ``rates`` (calls/s); the highest passing step (None if none)."""
    # Lazy imports and first-call paths: a warm-up, not reported (as bench_calls; tiny if quick).
    rate, seconds_warm = (50, 5) if warmup else (5, 1)
    bench_calls.run_step(rate, seconds_warm, setup.target, phone_port, workdir, "warmup")
    best = None
    for rate in rates:
        result = None
        for attempt in range(2):
            if time.monotonic() + seconds * 1.5 + 15 > deadline:
                print(f"  {setup.name}: time budget reached before {rate} calls/s", flush=True)
                return best
            step, cpu = measured(
                setup.watched,
                partial(
                    bench_calls.run_step,
                    rate,
                    seconds,
                    setup.target,
                    phone_port,
                    workdir,
                    setup.name,
                ),
            )
            again = " (again)" if attempt else ""
            print(
                f"  {step.row(setup.name)}{again}  {cpu.line()}".replace("CPU n/a ms/call  ", ""),
                flush=True,
            )
            result = step
            if step.passed:
                break
        if result is None or not result.passed:
            break
        best = Best(rate, result.calls / result.wall, cpu)
    return best


# --- main -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=30, help="duration of each step")
    parser.add_argument("--register-rates", help="comma-separated registrations/s")
    parser.add_argument("--call-rates", help="comma-separated calls/s")
    parser.add_argument("--users-per-tenant", type=int, default=bench_register.USERS_PER_TENANT)
    parser.add_argument("--only", default="one,cluster", help="set-ups to run, in order")
    parser.add_argument("--budget", type=float, default=1500.0, help="seconds for the whole run")
    parser.add_argument("--quick", action="store_true", help="tiny rates, 2 s steps (smoke run)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    register_rates: Sequence[int]
    call_rates: Sequence[int]
    if args.quick:
        seconds, users_per_tenant = QUICK_SECONDS, QUICK_USERS
        register_rates, call_rates = QUICK_REGISTER_RATES, QUICK_CALL_RATES
    else:
        seconds, users_per_tenant = args.seconds, args.users_per_tenant
        register_rates = bench_register._rates(args.register_rates, REGISTER_RATES)
        call_rates = bench_register._rates(args.call_rates, CALL_RATES)
    setups = [name.strip() for name in args.only.split(",") if name.strip()]
    deadline = time.monotonic() + args.budget
    workdir = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    results: dict[str, tuple[Best | None, Best | None]] = {}
    try:
        tenants, users = write_tenants(workdir, users_per_tenant)
        print(
            f"bench_cluster: {bench_register.TENANTS * users_per_tenant} users, {seconds} s per"
            f" step, {CPUS} CPUs, load average {os.getloadavg()[0]:.2f}, work dir {workdir}",
            flush=True,
        )
        for name in setups:
            starter = {"one": one_node, "cluster": two_nodes}[name]
            # Each set-up gets an equal share of what is left of the budget.
            share = time.monotonic() + (deadline - time.monotonic()) / (
                len(setups) - setups.index(name)
            )
            print(f"{name}:", flush=True)
            with starter(workdir, tenants) as setup:
                phone_port = free_port(host=bench_calls.PHONE_IP)
                bench_calls.register(setup.target, phone_port, workdir)
                middle = time.monotonic() + (share - time.monotonic()) / 2
                registered = register_ladder(setup, users, register_rates, seconds, workdir, middle)
                called = call_ladder(
                    setup, phone_port, call_rates, seconds, workdir, share, not args.quick
                )
                results[name] = (registered, called)
        print()
        print(
            f"Highest rate sustained {seconds} s (0 failures, < 0.1 % retransmissions), "
            f"with the CPU of every process at that step (% of one core, {CPUS} cores):"
        )
        for name, (registered, called) in results.items():
            print(f"  {name:7} registrations/s: {_best(registered)}")
            print(f"  {name:7} calls/s:         {_best(called)}")
        return 0
    finally:
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _best(best: Best | None) -> str:
    if best is None:
        return "none (the first step failed)"
    return (
        f"{best.rate} (achieved {best.achieved:.0f}/s)  {best.cpu.line()}\n"
        f"{'':27}CPU per operation: {per_operation(best)}"
    )


def per_operation(best: Best) -> str:
    """CPU ms per registration or call, per process group and in all (less sensitive to the
    rate than the % figures, though a busy machine still inflates them)."""
    ms = {name: 10 * pct / max(best.achieved, 1e-9) for name, pct in best.cpu.groups.items()}
    parts = [f"{name} {value:.2f} ms" for name, value in ms.items()]
    return ", ".join(parts) + f"; all {sum(ms.values()):.2f} ms"


if __name__ == "__main__":
    raise SystemExit(main())
