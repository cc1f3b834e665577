"""loadtests/bench_register.py reads the server's own stall lines after each step (loop lags,
slow commits, full collections), so a failed step says whether the server or something
outside it was slow. Each line is counted once, a line still being written waits for the next
step. It also reads the datagrams the kernel dropped at each side's socket (``/proc/net/udp``),
which says which side fell behind."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from loadtests.bench_register import ServerLog, Step, _noted, udp_drops


def _line(event: str, **fields: object) -> bytes:
    return json.dumps({"event": event, "level": "warning", **fields}).encode() + b"\n"


def test_the_server_log_reports_each_stall_once_and_waits_for_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "pbx.log"
    path.write_bytes(
        _line("registered", aor="sip:1000@t0.example")
        + _line("event_loop_lagged", lag_seconds=0.25)
        + _line("store_commit_slow", seconds=0.4, ops=3)
        + _line("event_loop_lagged", lag_seconds=0.5)
        + b"not json\n"
        + b'{"event": "gc_full_col'
    )
    log = ServerLog(path)
    assert log.stalls() == (3, "2 loop lags (max 0.5 s); 1 slow commits (max 0.4 s)")
    assert log.stalls() == (0, "no stall logged")  # nothing new, the partial line not read
    with path.open("ab") as handle:
        handle.write(b'lection", "ms": 1649}\n')
    assert log.stalls() == (1, "full gc 1649 ms")


def test_datagrams_dropped_at_a_full_socket_are_read_by_port() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as full,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as idle,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        full.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel's minimum
        full.bind(("127.0.0.1", 0))
        idle.bind(("127.0.0.1", 0))
        ports = [full.getsockname()[1], idle.getsockname()[1]]
        for _ in range(200):  # never read: most of them find the buffer full
            sender.sendto(bytes(1000), full.getsockname())
        drops = udp_drops(Path("/proc/net/udp").read_text(), ports)
    assert drops[ports[0]] > 100
    assert drops[ports[1]] == 0


def test_a_step_notes_the_drops_when_there_were_any_or_it_failed() -> None:
    passed = Step(100, 1000, 1000, 0, 0, 10.0, 2.0, 50.0, 5.0, server_drops=0, sipp_drops=0)
    assert _noted(passed, None) == ""
    dropped = Step(100, 1000, 990, 10, 0, 10.0, 2.0, 50.0, 5.0, server_drops=1234, sipp_drops=0)
    assert _noted(dropped, None) == (
        "  [datagrams dropped by the kernel: 1,234 at the server, 0 at SIPp]"
    )
    unread = Step(100, 1000, 990, 10, 0, 10.0, 2.0, 50.0, 5.0)
    assert "?" in _noted(unread, None)
