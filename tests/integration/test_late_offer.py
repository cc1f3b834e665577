"""Issue 16 end to end: a carrier's late offer (INVITE without SDP) through the relay.

SIPp is the carrier (127.0.0.2) and extension 1004, who records (127.0.0.1). The carrier's
INVITE has no SDP; 1004's 200 makes the offer and the carrier's ACK the answer. Both SDPs must
name the server's relay (the scenarios check the port range), both parties stream a tone with
SIPp's ``rtp_stream`` (A-law files made here: 697 Hz from the carrier, 1209 Hz from 1004), and
the recording must be stereo with the caller's tone on the left and the callee's on the right.
A carrier that goes silent is hung up after ``inactivity_seconds``.
"""

from __future__ import annotations

import math
import wave
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.suite import scenario
from pbx.media.g711 import encode_alaw
from tests.integration.harness import free_port, running_server, write_config
from tests.integration.test_calls import (
    CARRIER_IP,
    PHONE_IP,
    SERVER_EXTRA,
    TENANT,
    Pbx,
    Sipps,
    closed_record,
    register,
    sipp_args,
)
from tests.media.audio import goertzel_power, split_stereo

pytestmark = [pytest.mark.integration, pytest.mark.sipp]

CALLER_HZ, CALLEE_HZ = 697.0, 1209.0
RECORDED = "0312340005"  # rings 1004, who records


@pytest.fixture
def sipps(tmp_path: Path) -> Iterator[Sipps]:
    group = Sipps(tmp_path)
    try:
        yield group
    finally:
        group.close()


def tone_file(path: Path, frequency: float) -> Path:
    """One second of a tone as raw A-law (SIPp's rtp_stream loops it)."""
    pcm = array(
        "h", (round(8000 * math.sin(2 * math.pi * frequency * n / 8000)) for n in range(8000))
    )
    path.write_bytes(encode_alaw(pcm.tobytes()))
    return path


def late_offer_call(tmp_path: Path, sipps: Sipps, carrier: str, *, inactivity: int = 0) -> Pbx:
    root = tmp_path / "pbx"
    config = write_config(root, tenants={"acme": TENANT}, server_extra=SERVER_EXTRA)
    if inactivity:
        text = config.read_text(encoding="utf-8")
        config.write_text(
            text.replace("[media]\n", f"[media]\ninactivity_seconds = {inactivity}\n")
        )
    with running_server(config) as server:
        port = free_port(host=PHONE_IP)
        register(server, "1004", port, tmp_path)
        pbx = Pbx(server, root, 0, {"1004": port})
        callee = scenario(
            "phone_answer_late_offer.xml", tmp_path, tone_file(tmp_path / "callee.al", CALLEE_HZ)
        )
        args = sipp_args(callee, server.udp, local_ip=PHONE_IP, port=port, service="1004")
        sipps.start("1004", args, bound=(PHONE_IP, port))
        caller = scenario(carrier, tmp_path, tone_file(tmp_path / "caller.al", CALLER_HZ))
        args = sipp_args(
            caller,
            server.udp,
            local_ip=CARRIER_IP,
            port=free_port(host=CARRIER_IP),
            service=RECORDED,
            extra=["-d", "3000"],
        )
        sipps.start("carrier", args)
        sipps.wait_all()  # both scenarios checked the relay's port in the SDP they got
        closed_record(pbx, RECORDED)
    return pbx


def test_a_late_offer_call_is_anchored_and_recorded_in_stereo(tmp_path: Path, sipps: Sipps) -> None:
    pbx = late_offer_call(tmp_path, sipps, "carrier_late_offer.xml")
    record = closed_record(pbx, RECORDED)
    assert (record["disposition"], record["answered_by"]) == ("answered", "1004")
    assert (record["hangup_cause"], record["ended_by"]) == ("normal", "caller")
    path = Path(record["recording_path"])
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, 8000, 2)
        frames = wav.readframes(wav.getnframes())
    left, right = split_stereo(frames)
    seconds = len(left) / 2 / 8000
    caller = goertzel_power(left, CALLER_HZ), goertzel_power(left, CALLEE_HZ)
    callee = goertzel_power(right, CALLEE_HZ), goertzel_power(right, CALLER_HZ)
    print(
        f"late-offer recording: {seconds:.2f} s; left {CALLER_HZ:.0f} Hz {caller[0]:.3g} vs "
        f"{caller[1]:.3g}, right {CALLEE_HZ:.0f} Hz {callee[0]:.3g} vs {callee[1]:.3g}"
    )
    assert seconds >= 2.5
    assert caller[0] > 100 * caller[1]  # the carrier's tone, on the left only
    assert callee[0] > 100 * callee[1]  # 1004's tone, on the right only


def test_a_late_offer_party_that_goes_silent_is_hung_up(tmp_path: Path, sipps: Sipps) -> None:
    pbx = late_offer_call(tmp_path, sipps, "carrier_late_offer_silent.xml", inactivity=2)
    record = closed_record(pbx, RECORDED)
    assert record["disposition"] == "answered"
    assert (record["hangup_cause"], record["ended_by"]) == ("rtp_timeout", "server")
    assert any("no RTP from the caller" in line for line in record["trace"])
    assert record["ended_at"] - record["answered_at"] < 10
