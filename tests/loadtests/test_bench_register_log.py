"""loadtests/bench_register.py reads the server's own stall lines after each step (loop lags,
slow commits, full collections), so a failed step says whether the server or something
outside it was slow. Each line is counted once, a line still being written waits for the next
step."""

from __future__ import annotations

import json
from pathlib import Path

from loadtests.bench_register import ServerLog


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
