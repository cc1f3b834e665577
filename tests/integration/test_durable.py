"""Issue 16 end to end: a kill -9 with answered calls up, one of them recorded, then a restart.

Each row keeps its answer time, answerer and recording path (written when the call was
answered, not at its end), is closed as ended by a crash at its last known instant, and the
recording the kill cut short opens as a WAV (Python's ``wave`` and ``sox --i``).
"""

from __future__ import annotations

import signal
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import SIPP_DIR, free_port, running_server, write_config
from tests.integration.test_calls import (
    CARRIER_IP,
    SERVER_EXTRA,
    TENANT,
    Pbx,
    Sipps,
    calls_to,
    phone,
    register,
    sipp_args,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def sipps(tmp_path: Path) -> Iterator[Sipps]:
    group = Sipps(tmp_path)
    try:
        yield group
    finally:
        group.close()


def carrier(pbx: Pbx, sipps: Sipps, number: str, scenario: str) -> None:
    args = sipp_args(
        SIPP_DIR / scenario,
        pbx.server.udp,
        local_ip=CARRIER_IP,
        port=free_port(host=CARRIER_IP),
        service=number,
    )
    sipps.start(f"carrier:{number}", args)


def test_kill_9_with_answered_calls_keeps_the_answers_and_a_playable_recording(
    tmp_path: Path, sipps: Sipps
) -> None:
    root = tmp_path / "pbx"
    config = write_config(
        root,
        tenants={"acme": TENANT},
        server_extra=SERVER_EXTRA,
        trunk=f"{CARRIER_IP}:{free_port(host=CARRIER_IP)}",
    )
    with running_server(config) as server:
        ports = {ext: free_port(host="127.0.0.1") for ext in ("1001", "1004")}
        for ext, port in ports.items():
            register(server, ext, port, tmp_path)
        pbx = Pbx(server, root, 0, ports)
        phone(pbx, sipps, "1001", "phone_answer.xml")  # no SDP: not recorded
        phone(pbx, sipps, "1004", "phone_answer_sdp.xml")  # 1004 has recording on
        carrier(pbx, sipps, "0312340002", "carrier_call_hungup.xml")
        carrier(pbx, sipps, "0312340005", "carrier_call_sdp_waits.xml")

        def durable() -> bool:
            plain, recorded = calls_to(pbx, "0312340002"), calls_to(pbx, "0312340005")
            return bool(
                plain
                and recorded
                and plain[0]["answered_at"] is not None
                and recorded[0]["recording_path"] is not None
            )

        # In the database while the calls are up: the answer is not kept in memory only.
        wait_for("both answers on disk", durable, timeout=20)
        recording = Path(calls_to(pbx, "0312340005")[0]["recording_path"])
        wait_for("audio in the recording", lambda: recording.stat().st_size > 44 + 8000)
        server.process.send_signal(signal.SIGKILL)
        assert server.process.wait(timeout=10) == -signal.SIGKILL
    size_at_kill = recording.stat().st_size

    with running_server(config) as restarted:
        [recovered] = restarted.wait_for_events("call_records_recovered", 1)
        assert recovered["count"] == 2
    rows: dict[str, dict[str, Any]] = {
        called: calls_to(pbx, called)[0] for called in ("0312340002", "0312340005")
    }
    for called, answerer in (("0312340002", "1001"), ("0312340005", "1004")):
        row = rows[called]
        assert row["disposition"] == "answered", row
        assert row["answered_by"] == answerer
        assert (row["hangup_cause"], row["ended_by"]) == ("crash", "server")
        assert row["started_at"] <= row["answered_at"] <= row["ended_at"]
        assert row["caller_call_id"]
        assert row["callee_call_id"]
        assert row["trace"][-1].startswith("closed at start-up")
    assert rows["0312340002"]["recording_path"] is None
    assert rows["0312340005"]["recording_path"] == str(recording)
    with wave.open(str(recording), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, 8000, 2)
        frames = wav.getnframes()
        assert frames * 4 == recording.stat().st_size - 44
        assert frames >= 2000  # the audio up to the kill is kept
    sox = subprocess.run(
        ["sox", "--i", str(recording)], capture_output=True, text=True, check=False
    )
    assert sox.returncode == 0, sox.stderr
    assert "Channels       : 2" in sox.stdout
    print(f"recording cut by kill -9: {size_at_kill} bytes, {frames / 8000:.2f} s playable")
