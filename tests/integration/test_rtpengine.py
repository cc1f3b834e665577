"""rtpengine as the media plane (issue #20): ``pbx run`` with ``[media] engine = "rtpengine"``.

A private rtpengine (Debian's ``rtpengine-daemon``, userspace only: ``--table=-1``) listens for
the ng protocol on a free loopback port, relays in 22000-22999 and records with its ``pcap``
method into the test's folder; it is started here and ended by its pid. Two pyVoIP phones (the
helpers of test_media_calls) then show, through rtpengine and not the node:
1. a recorded call: each phone hears the other's tone, and the call's WAV (made by the node from
   rtpengine's pcap) is stereo with each party's tone on its own channel;
2. the 009608 announcement, played by rtpengine (``play media``), heard by the caller;
3. a caller that stops sending is hung up after ``inactivity_seconds`` (read from rtpengine's
   packet counts with ``query``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import wave
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pbx.media.ng import ng_reply, ng_request
from tests.integration import test_media_calls
from tests.integration.harness import (
    RTP_PORTS,
    RunningServer,
    free_port,
    running_server,
    write_config,
)
from tests.integration.test_media_calls import (
    CALLEE_HZ,
    CALLER_HZ,
    PACKET,
    PROMPT,
    RATE,
    SERVER_EXTRA,
    SETUP_TIMEOUT,
    TENANT,
    TONE_RMS,
    TONE_SECONDS,
    Phone,
    _Muted,
    assert_hears,
    client_of,
    closed_record,
    envelope_correlation,
    pcmu_audio,
    received_packets,
    rms,
    talk,
    tone_packets,
    unsigned_tone,
    wait_until,
)

pytestmark = pytest.mark.integration
# The pyVoIP fixtures of the built-in relay's media tests, used as they are.
phones = test_media_calls.phones
rtp_capture = test_media_calls.rtp_capture

RTPENGINE_PORTS = (22000, 22999)
INACTIVITY = 2  # seconds; the phones send all the time (silence too) until muted


@pytest.fixture(scope="module")
def rtpengine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A private rtpengine: (its ng port, its recording folder)."""
    recordings = tmp_path_factory.mktemp("rtpengine")
    port = free_port(host="127.0.0.1", kind=socket.SOCK_DGRAM)
    binary = shutil.which("rtpengine")
    assert binary, "rtpengine-daemon is installed by scripts/test.sh"
    process = subprocess.Popen(
        [
            binary,
            "--table=-1",
            "--interface=127.0.0.1",
            f"--listen-ng=127.0.0.1:{port}",
            "--foreground",
            "--log-stderr",
            "--log-level=5",
            f"--port-min={RTPENGINE_PORTS[0]}",
            f"--port-max={RTPENGINE_PORTS[1]}",
            f"--recording-dir={recordings}",
            "--recording-method=pcap",
            "--recording-format=raw",
            "--delete-delay=0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(recordings / "rtpengine.log").open("wb"),
    )
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.settimeout(0.1)

            def pong() -> bool:
                assert process.poll() is None, (recordings / "rtpengine.log").read_text()
                probe.sendto(ng_request(b"ping1", {"command": "ping"}), ("127.0.0.1", port))
                try:
                    return ng_reply(probe.recv(4096))[1].get(b"result") == b"pong"
                except OSError:
                    return False

            wait_until("rtpengine to answer ping", pong, 10)
        yield port, recordings
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, rtpengine: tuple[int, Path]
) -> Iterator[tuple[RunningServer, Path]]:
    ng_port, recordings = rtpengine
    root = tmp_path_factory.mktemp("rtpengine-node")
    config = write_config(root, tenants={"acme": TENANT}, server_extra=SERVER_EXTRA)
    text = config.read_text(encoding="utf-8")
    engine = (
        f'rtp_ports = "{RTP_PORTS}"\n'
        f"inactivity_seconds = {INACTIVITY}\n"
        'engine = "rtpengine"\n'
        f'rtpengine = "udp:127.0.0.1:{ng_port}"\n'
        f'rtpengine_recording_dir = "{recordings}"\n'
    )
    config.write_text(text.replace(f'rtp_ports = "{RTP_PORTS}"\n', engine), encoding="utf-8")
    with running_server(config) as server:
        yield server, root


def relayed_by_node(server: RunningServer) -> float:
    """RTP packets the node itself relayed (zero when rtpengine carries the media)."""
    return sum(
        value for name, value in server.metrics().items() if name.startswith("pbx_rtp_packets")
    )


def test_recorded_call_through_rtpengine_both_ways_and_a_stereo_file(
    node: tuple[RunningServer, Path], phones: Any
) -> None:
    from pyVoIP.VoIP import CallState

    server, root = node
    callee: Phone = phones(server, "1003")  # recording = true
    caller: Phone = phones(server, "1002")
    call, incoming = talk(caller, callee, "1003", caller_pause=1.0)

    # Each phone's media peer is rtpengine, not the node's own port range.
    for c in (call, incoming):
        assert RTPENGINE_PORTS[0] <= client_of(c).outPort <= RTPENGINE_PORTS[1]
    tone_count = round(TONE_SECONDS * RATE / PACKET)
    for listener, expected, other in (
        (call, CALLEE_HZ, CALLER_HZ),
        (incoming, CALLER_HZ, CALLEE_HZ),
    ):
        heard = tone_packets(received_packets(listener))
        assert len(heard) >= 0.9 * tone_count, (len(heard), tone_count)
        assert_hears(b"".join(heard), expected, other)
    assert relayed_by_node(server) == 0

    call.hangup()
    wait_until("the BYE at the callee", lambda: incoming.state is CallState.ENDED, SETUP_TIMEOUT)
    record = closed_record(root, "1003", 0)
    path = Path(record["recording_path"])
    # Renamed into place once written whole: once it exists, it is complete.
    wait_until("the WAV made from rtpengine's pcap", path.exists, 10)
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, RATE)
        frames = wav.readframes(wav.getnframes())
    info = subprocess.run(
        ["sox", "--i", str(path)], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    assert "Channels       : 2" in info, info
    samples = array("h", frames)
    spans = {}
    for name, channel, expected, other in (
        ("left", samples[0::2].tobytes(), CALLER_HZ, CALLEE_HZ),
        ("right", samples[1::2].tobytes(), CALLEE_HZ, CALLER_HZ),
    ):
        loud = [
            i
            for i in range(0, len(channel) // 2 - PACKET + 1, PACKET)
            if rms(channel[2 * i : 2 * (i + PACKET)]) > TONE_RMS
        ]
        assert loud, f"silent {name} channel"
        start, end = loud[0] / RATE, (loud[-1] + PACKET) / RATE
        spans[name] = (start, end)
        assert TONE_SECONDS - 0.2 <= end - start <= TONE_SECONDS + 0.3, spans
        assert_hears(channel[2 * loud[0] : 2 * (loud[-1] + PACKET)], expected, other)
    gap = spans["left"][0] - spans["right"][0]  # the caller's one-second pause
    assert 0.8 <= gap <= 1.4, spans
    print("rtpengine recording spans (s):", spans)


def test_announcement_played_by_rtpengine_is_heard(
    node: tuple[RunningServer, Path], phones: Any
) -> None:
    from pyVoIP.VoIP import CallState

    server, root = node
    with wave.open(str(PROMPT), "rb") as prompt_file:
        prompt = prompt_file.readframes(prompt_file.getnframes())
    prompt_seconds = len(prompt) / 2 / RATE
    caller: Phone = phones(server, "1002")
    call = caller.call("0612345678")
    assert RTPENGINE_PORTS[0] <= client_of(call).outPort <= RTPENGINE_PORTS[1]
    wait_until("the BYE after the announcement", lambda: call.state is CallState.ENDED, 25)
    audio = pcmu_audio(received_packets(call))
    expected = prompt_seconds * RATE / PACKET
    assert len(audio) >= 0.85 * expected, (len(audio), expected)
    lag, r = envelope_correlation(b"".join(pcm for _, pcm in audio), prompt)
    print(f"rtpengine announcement: {len(audio)}/{expected:.0f} packets, r={r:.4f} lag {lag:+.2f}s")
    assert r > 0.8, r
    record = closed_record(root, "0612345678", 0)
    assert record["answered_by"] == "009608"
    assert any("009608 played" in line for line in record["trace"]), record["trace"]


def test_caller_that_stops_sending_is_hung_up(
    node: tuple[RunningServer, Path], phones: Any
) -> None:
    from pyVoIP.VoIP import CallState

    server, root = node
    callee: Phone = phones(server, "1001")
    caller: Phone = phones(server, "1002")
    callee.answer_tone = unsigned_tone(CALLEE_HZ, 30)  # talks for longer than the test
    call = caller.call("1001")
    wait_until("media from the callee", lambda: received_packets(call), SETUP_TIMEOUT)
    (incoming,) = callee.incoming
    client_of(call).sout = _Muted()  # the caller stops sending, keeps receiving
    muted_at = time.monotonic()
    wait_until(
        "BYE to both phones",
        lambda: call.state is CallState.ENDED and incoming.state is CallState.ENDED,
        INACTIVITY + 8,
    )
    elapsed = time.monotonic() - muted_at
    print(f"rtpengine inactivity: BYE {elapsed:.2f}s after the caller went quiet")
    assert INACTIVITY - 0.1 <= elapsed <= INACTIVITY + 3, elapsed
    record = closed_record(root, "1001", 0)
    assert any(f"no RTP from the caller for {INACTIVITY}s" in line for line in record["trace"])
