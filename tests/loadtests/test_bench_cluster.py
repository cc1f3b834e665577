"""loadtests/bench_cluster.py (issue #20): its quick mode runs end to end, one node and the edge
with two nodes, each step with the CPU of every process; nothing it started outlives it.

The quick run (tiny rates, 2 s steps, 100 users) takes about half a minute.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtests.bench_cluster import Best, CpuUse, Watched, descendants, measured, per_operation
from tests.integration.harness import REPO

pytestmark = [pytest.mark.integration, pytest.mark.sipp]


def test_descendants_include_the_root_and_its_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = descendants(os.getpid())
        assert found[0] == os.getpid()
        assert child.pid in found
    finally:
        child.kill()
        child.wait()


def test_measured_reports_the_cpu_of_each_watched_group_and_the_reaped_children() -> None:
    def busy() -> int:
        end = time.process_time() + 0.2
        while time.process_time() < end:
            pass
        subprocess.run(
            [sys.executable, "-c", "sum(range(3_000_000))"], check=True, capture_output=True
        )
        return 7

    result, use = measured(Watched({"me": [os.getpid()], "gone": [2**22 + 1]}), busy)
    assert result == 7
    assert use.groups["me"] > 10  # 0.2 s of CPU at least over well under 2 s
    assert use.groups["gone"] == 0  # a pid that does not exist counts nothing
    assert use.groups["sipp"] > 0  # the reaped child's CPU
    assert use.total == pytest.approx(sum(use.groups.values()))
    assert use.machine is not None
    assert 0 < use.machine <= 100 * (os.cpu_count() or 1) + 1


def test_a_cpu_line_names_every_group_and_counts_forked_processes() -> None:
    use = CpuUse(
        groups={"node1": 80.4, "kamailio": 30.0, "sipp": 50.0},
        counts={"node1": 1, "kamailio": 6, "sipp": 1},
        busiest={"node1": 80.4, "kamailio": 20.0, "sipp": 50.0},
    )
    line = use.line()
    assert line.startswith("cpu node1 80 %, kamailio 30 % (6 processes, busiest 20 %), sipp 50 %")
    assert "; sum 160 % of " in line
    assert per_operation(Best(1000, 1000.0, use)) == (  # 80.4 % of a core / 1000/s
        "node1 0.80 ms, kamailio 0.30 ms, sipp 0.50 ms; all 1.60 ms"
    )
    use.machine = 190.0
    assert use.line().endswith("; machine 190 % (other work 30 %)")


def test_quick_run_measures_one_node_and_the_edge_with_two_nodes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadtests.bench_cluster", "--quick", "--keep"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    kept = Path(re.findall(r"work dir kept: (\S+)", out)[-1])
    try:
        # Every step line: its verdict and the CPU of each process of its set-up.
        one = [line for line in out.splitlines() if line.startswith("  one ")]
        cluster = [line for line in out.splitlines() if line.startswith("  cluster ")]
        assert any(" register " in line for line in one)
        assert any(" cps " in line for line in one)
        assert any(" register " in line for line in cluster)
        assert any(" cps " in line for line in cluster)
        for line in one:
            assert re.search(
                r"cpu pbx \d+ %, sipp \d+ %; sum \d+ % of \d+ %; machine \d+ % \(other work",
                line,
            ), line
        for line in cluster:
            assert re.search(
                r"cpu node1 \d+ %, node2 \d+ %, kamailio \d+ % \(\d+ processes, busiest \d+ %\),"
                r" sipp \d+ %",
                line,
            ), line
        # Tiny rates: every registration and every call completes (a call step may still be
        # judged FAIL on a busy machine, by its INVITE->200 p99 over 10 calls).
        assert any(" ok 40/40  failed 0 " in line for line in one), out
        assert any(" ok 40/40  failed 0 " in line for line in cluster), out
        assert any("uac ok/failed 10/0  uas ok/failed 10/0" in line for line in one), out
        assert any("uac ok/failed 10/0  uas ok/failed 10/0" in line for line in cluster), out
        # The summary: each ladder of each set-up.
        for name in ("one", "cluster"):
            assert re.search(rf"{name} +registrations/s: 20 \(achieved", out), out
            assert re.search(r"CPU per operation: .*; all \d+\.\d\d ms", out), out
            assert re.search(rf"{name} +calls/s: ", out), out
        # cluster.sh down stopped the edge and both nodes (by their pid files).
        assert (kept / "cluster").is_dir()
        assert not list((kept / "cluster").glob("*.pid"))
    finally:
        subprocess.run(["rm", "-rf", str(kept)], check=False)
