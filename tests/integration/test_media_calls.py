"""Media end to end: pyVoIP softphones talk through the running server's RTP relay.

Two pyVoIP 1.6 phones register over UDP on 127.0.0.1 (pyVoIP puts the server's address in its
SIP URIs, so they land in the default tenant) and call each other; each sends its own tone and
the test checks what the other one hears. pyVoIP's media API, read from its source:
``VoIPCall.write_audio`` takes 8-bit unsigned linear PCM at 8 kHz (it biases by -128 and encodes
PCMU), and the transmitter thread sends one 160-sample packet every 20 ms, silence (0x80) when
nothing is queued. What a phone receives is captured at ``RTPClient.parse_packet`` (every
datagram, with its arrival time) and what it sends at ``RTPClient.encode_packet`` (every payload
before encoding), both wrapped with ``monkeypatch``; audio is decoded here, not through pyVoIP's
jitter-less buffer.

pyVoIP quirks these tests live with (DESIGN.md section 8): it starts reading SIP 1 s after it
registered (we wait for its reader thread before dialling); it opens its RTP socket only when it
reads the 200, so the first packet or two of the announcement reach nobody; it runs a call's
callback in a thread whose end makes it forget the call, so the answering callback stays alive
until the call ends; it acknowledges a 2xx with a new random To tag, which the server must
still take (the last test: otherwise it retransmits the 200 and tears the call down after 64*T1).

The server's ``[media] rtp_ports`` is the harness's ``RTP_PORTS``; the phones use 18000-18299.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import wave
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pbx.media.g711 import decode_ulaw
from tests.integration.harness import (
    RTP_PORTS,
    RunningServer,
    free_port,
    running_server,
    write_config,
)
from tests.media.audio import goertzel_power

pytestmark = pytest.mark.integration

PHONE_IP = "127.0.0.1"
EVERY_DAY = 'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]'
PROMPT = Path(__file__).resolve().parents[2] / "pbx" / "prompts" / "009608.wav"

TENANT = f"""
[tenant]
domain = "acme.example"
timezone = "Asia/Tokyo"
default = true
qualify_seconds = 0  # scripted clients: no keep-alive OPTIONS (see harness.py)

[limits]
max_users = 10
recording_users = 1
international_calls = false

[[numbers]]
number = "0312345678"
[[numbers]]
number = "0612345678"

[[users]]
extension = "1001"
password = "secret1001"
caller_id = "0312345678"

[[users]]
extension = "1002"
password = "secret1002"
caller_id = "0312345678"

[[users]]
extension = "1003"
password = "secret1003"
caller_id = "0312345678"
recording = true

[[incoming]]
number = "0312345678"
targets = "1001"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"

# After hours all week: the announcement, at any time the test runs.
[[incoming]]
number = "0612345678"
targets = "009608"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"
"""

SERVER_EXTRA = """
[security]
max_requests_per_second = 10000
"""

# RTP port ranges of the phones (pyVoIP picks a random port in its range for each call).
PHONE_RTP = {"1001": 18000, "1002": 18100, "1003": 18200}
RATE = 8000
PACKET = 160  # samples per 20 ms packet, pyVoIP's fixed packetisation
TONE_SECONDS = 2.5
CALLER_HZ, CALLEE_HZ = 697.0, 1209.0  # DTMF row "1" and column "1": far apart, no harmonics
CANDIDATES = (CALLER_HZ, 941.0, CALLEE_HZ, 1477.0)
TONE_RMS = 2000  # a decoded packet louder than this carries tone; pyVoIP silence decodes to 0
SETUP_TIMEOUT = 10.0


# --- pyVoIP capture -----------------------------------------------------------------------------


@dataclass
class Capture:
    """What one pyVoIP RTP client received (arrival time, datagram) and sent (time, payload)."""

    received: list[tuple[float, bytes]] = field(default_factory=list)
    sent: list[tuple[float, bytes]] = field(default_factory=list)


def capture_of(client: Any) -> Capture:
    capture: Capture = client.__dict__.setdefault("_test_capture", Capture())
    return capture


@pytest.fixture
def rtp_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record every datagram pyVoIP's RTP clients receive and every payload they send."""
    import pyVoIP.VoIP  # noqa: F401  (first: pyVoIP.SIP alone runs into a circular import)
    from pyVoIP.RTP import RTPClient
    from pyVoIP.SIP import SIPClient

    parse, encode = RTPClient.parse_packet, RTPClient.encode_packet
    recv_loop = SIPClient.recv_loop

    def listening_recv_loop(self: Any) -> None:
        self.__dict__["_test_listening"] = True
        recv_loop(self)

    parse_message = SIPClient.parse_message

    def logged_parse_message(self: Any, message: Any) -> None:
        self.__dict__.setdefault("_test_sip", []).append((time.monotonic(), message))
        parse_message(self, message)

    def parse_packet(self: Any, packet: bytes) -> None:
        capture_of(self).received.append((time.monotonic(), packet))
        parse(self, packet)

    def encode_packet(self: Any, payload: bytes) -> bytes:
        capture_of(self).sent.append((time.monotonic(), payload))
        return bytes(encode(self, payload))

    monkeypatch.setattr(RTPClient, "parse_packet", parse_packet)
    monkeypatch.setattr(RTPClient, "encode_packet", encode_packet)
    # pyVoIP reads SIP only from a thread it starts 1 s after registering: until then a 200
    # to our INVITE would wait in the socket (and the prompt play to nobody).
    monkeypatch.setattr(SIPClient, "recv_loop", listening_recv_loop)
    monkeypatch.setattr(SIPClient, "parse_message", logged_parse_message)

    @contextlib.contextmanager
    def locked_nonblocking(lock: Any, sock: socket.socket) -> Iterator[None]:
        with lock:
            sock.setblocking(False)
            try:
                yield
            finally:
                sock.setblocking(True)

    # pyVoIP's reader makes the socket blocking again only after releasing the lock, so an
    # INVITE sent in that instant reads a non-blocking socket and fails with BlockingIOError:
    # the same helper, restoring it inside the lock.
    monkeypatch.setattr("pyVoIP.SIP.acquired_lock_and_unblocked_socket", locked_nonblocking)


def unsigned_tone(frequency: float, seconds: float, amplitude: int = 90) -> bytes:
    """A sine tone as pyVoIP's write_audio wants it: 8-bit unsigned linear PCM at 8 kHz."""
    count = round(seconds * RATE)
    return bytes(
        128 + round(amplitude * math.sin(2 * math.pi * frequency * n / RATE)) for n in range(count)
    )


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Phone:
    """A registered pyVoIP phone; with ``answer_tone`` set it answers calls and sends the tone."""

    def __init__(self, server: RunningServer, extension: str) -> None:
        from pyVoIP.VoIP import VoIPPhone

        self.server = server
        self.extension = extension
        self.sip_port = free_port(host=PHONE_IP)
        low = PHONE_RTP[extension]
        self.phone = VoIPPhone(
            server.udp[0],
            server.udp[1],
            extension,
            f"secret{extension}",
            myIP=PHONE_IP,
            callCallback=self._on_call,
            sipPort=self.sip_port,
            rtpPortLow=low,
            rtpPortHigh=low + 99,
        )
        self.phone.sip.register_timeout = 5  # bounds start() and stop(), which block on it
        self.answer_tone: bytes | None = None
        self.incoming: list[Any] = []
        self.errors: list[BaseException] = []
        self._stopping = threading.Event()
        self._starter = threading.Thread(
            target=self.phone.start, name=f"pyvoip-{extension}", daemon=True
        )

    def start(self) -> None:
        self._starter.start()

        def registered() -> bool:
            status, rows = self.server.admin_request("GET", "/registrations")
            return status == 200 and any(
                row["extension"] == self.extension and row["source"].endswith(f":{self.sip_port}")
                for row in rows
            )

        wait_until(f"{self.extension} to register", registered, 15, interval=0.05)
        self._starter.join(timeout=10)
        wait_until(
            f"{self.extension} to read SIP",
            lambda: self.phone.sip.__dict__.get("_test_listening"),
            5,
        )

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(Exception):
            self.phone.stop()  # hangs up what is still up, unregisters (bounded)
        self._starter.join(timeout=10)

    def _on_call(self, call: Any) -> None:
        """pyVoIP's callback thread for an incoming call: answer, talk, stay until it ends."""
        from pyVoIP.VoIP import CallState

        try:
            self.incoming.append(call)
            if self.answer_tone is None:
                return
            call.answer()
            # Talk once the caller's media arrives: then the path is up both ways.
            wait_until("media from the caller", lambda: received_packets(call), SETUP_TIMEOUT)
            call.write_audio(self.answer_tone)
            deadline = time.monotonic() + 50
            while (
                call.state is not CallState.ENDED
                and not self._stopping.is_set()
                and time.monotonic() < deadline
            ):
                time.sleep(0.02)
        except BaseException as exc:
            self.errors.append(exc)

    def call(self, number: str) -> Any:
        """Dial (pyVoIP answers the 401 itself); returns the VoIPCall once it is answered."""
        from pyVoIP.VoIP import CallState

        box: dict[str, Any] = {}

        def dial() -> None:
            try:
                box["call"] = self.phone.call(number)
            except BaseException as exc:
                box["error"] = exc

        # VoIPPhone.call blocks on the server's first answer: bounded by running it aside.
        dialer = threading.Thread(target=dial, name=f"pyvoip-dial-{number}", daemon=True)
        dialer.start()
        dialer.join(SETUP_TIMEOUT)
        assert "error" not in box, box.get("error")
        assert "call" in box, f"{self.extension} could not place the call to {number}"
        call = box["call"]
        wait_until(
            f"the call to {number} to be answered",
            lambda: call.state is CallState.ANSWERED,
            SETUP_TIMEOUT,
        )
        return call


@pytest.fixture
def phones(rtp_capture: None) -> Iterator[Callable[[RunningServer, str], Phone]]:
    made: list[Phone] = []

    def make(server: RunningServer, extension: str) -> Phone:
        phone = Phone(server, extension)
        made.append(phone)
        phone.start()
        return phone

    try:
        yield make
    finally:
        for phone in made:
            phone.stop()
    for phone in made:
        assert phone.errors == [], phone.errors


# --- audio analysis -----------------------------------------------------------------------------


def client_of(call: Any) -> Any:
    (client,) = call.RTPClients
    return client


def received_packets(call: Any) -> list[tuple[float, bytes]]:
    if not call.RTPClients:
        return []
    return list(capture_of(client_of(call)).received)


def sent_payloads(call: Any) -> list[tuple[float, bytes]]:
    return list(capture_of(client_of(call)).sent)


def pcmu_audio(packets: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    """(arrival, 16-bit PCM) per PCMU packet (payload type 0, plain 12-byte header)."""
    out = []
    for arrived, datagram in packets:
        assert datagram[0] >> 6 == 2, "not RTP version 2"
        assert datagram[1] & 0x7F == 0, f"payload type {datagram[1] & 0x7F}, not PCMU"
        assert datagram[0] & 0x1F == 0, "CSRC or header extension"
        out.append((arrived, decode_ulaw(datagram[12:])))
    return out


def rms(pcm: bytes) -> float:
    samples = array("h", pcm)
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


def tone_packets(packets: list[tuple[float, bytes]]) -> list[bytes]:
    """The decoded packets that carry sound."""
    return [pcm for _, pcm in pcmu_audio(packets) if rms(pcm) > TONE_RMS]


def sent_tone_count(payloads: list[tuple[float, bytes]]) -> int:
    """How many payloads a phone sent that were not silence (0x80 in 8-bit unsigned)."""
    return sum(1 for _, payload in payloads if payload.strip(b"\x80"))


def powers(pcm: bytes) -> dict[float, float]:
    return {f: goertzel_power(pcm, f) for f in CANDIDATES}


def assert_hears(pcm: bytes, expected: float, other: float) -> dict[float, float]:
    """``expected`` is the dominant candidate, and far above ``other`` (no crossed streams)."""
    power = powers(pcm)
    assert max(power, key=power.__getitem__) == expected, power
    assert power[expected] > 100 * power[other], power
    return power


# --- records ------------------------------------------------------------------------------------


def call_records(root: Path, called: str) -> list[dict[str, Any]]:
    db_path = root / "data" / "pbx.sqlite3"
    if not db_path.exists():
        return []
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT * FROM call_records WHERE called = ? ORDER BY started_at", (called,)
        ).fetchall()
    records = []
    for row in rows:
        record = dict(row)
        record["trace"] = json.loads(record["trace"])
        records.append(record)
    return records


def closed_record(root: Path, called: str, after: int) -> dict[str, Any]:
    """The first record of a call to ``called`` beyond the ``after`` already there, once closed."""

    def check() -> dict[str, Any] | None:
        rows = call_records(root, called)
        if len(rows) > after and rows[after]["ended_at"] is not None:
            return rows[after]
        return None

    record: dict[str, Any] = wait_until(f"the record of the call to {called}", check, 10)
    return record


def ports_in_use(server: RunningServer) -> int:
    status, metrics = server.admin_request("GET", "/metrics")
    assert status == 200
    match = re.search(r"^pbx_rtp_ports_in_use (\d+)(?:\.0)?$", metrics, re.M)
    assert match, metrics
    return int(match.group(1))


def no_active_calls(server: RunningServer) -> None:
    def check() -> bool:
        status, calls = server.admin_request("GET", "/calls")
        return status == 200 and calls == []

    wait_until("no active calls", check, 10, interval=0.05)


# --- the server ---------------------------------------------------------------------------------


@dataclass
class Pbx:
    server: RunningServer
    root: Path


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pbx]:
    root = tmp_path_factory.mktemp("media-calls")
    config = write_config(root, tenants={"acme": TENANT}, server_extra=SERVER_EXTRA)
    with running_server(config) as server:
        yield Pbx(server, root)


def talk(caller: Phone, callee: Phone, number: str, caller_pause: float = 0.0) -> tuple[Any, Any]:
    """``caller`` dials, ``callee`` answers; each sends its tone once media flows both ways,
    the caller after ``caller_pause`` seconds of silence. Returns both calls once both tones
    have been sent."""
    callee.answer_tone = unsigned_tone(CALLEE_HZ, TONE_SECONDS)
    call = caller.call(number)
    wait_until("media from the callee", lambda: received_packets(call), SETUP_TIMEOUT)
    pause = b"\x80" * round(caller_pause * RATE)  # 8-bit unsigned silence
    call.write_audio(pause + unsigned_tone(CALLER_HZ, TONE_SECONDS))
    (incoming,) = callee.incoming
    tone_count = round(TONE_SECONDS * RATE / PACKET)

    def both_sent() -> bool:
        # Each tone has gone out and a silent packet after it: nothing more to hear.
        return all(
            sent_tone_count(sent_payloads(c)) >= tone_count
            and not sent_payloads(c)[-1][1].strip(b"\x80")
            for c in (call, incoming)
        )

    # Waiting out the tones' own duration (plus the callee's start and the relay's transit).
    wait_until("both tones to be sent", both_sent, caller_pause + TONE_SECONDS + SETUP_TIMEOUT)
    time.sleep(0.2)  # the last packets' transit through the relay (loopback: well under this)
    return call, incoming


# --- 1. two phones talk -------------------------------------------------------------------------


def test_two_pyvoip_phones_hear_each_others_tone_through_the_relay(
    pbx: Pbx, phones: Callable[[RunningServer, str], Phone]
) -> None:
    from pyVoIP.VoIP import CallState

    callee = phones(pbx.server, "1001")
    caller = phones(pbx.server, "1002")
    before = len(call_records(pbx.root, "1001"))
    call, incoming = talk(caller, callee, "1001")

    # Media went through the relay: each phone's SDP peer is the server's port range.
    for c in (call, incoming):
        low, high = map(int, RTP_PORTS.split("-"))
        assert low <= client_of(c).outPort <= high, client_of(c).outPort
        assert client_of(c).outIP == pbx.server.udp[0]

    tone_count = round(TONE_SECONDS * RATE / PACKET)
    figures = {}
    for name, listener, talker, expected, other in (
        ("caller hears callee", call, incoming, CALLEE_HZ, CALLER_HZ),
        ("callee hears caller", incoming, call, CALLER_HZ, CALLEE_HZ),
    ):
        heard = tone_packets(received_packets(listener))
        sent = sent_tone_count(sent_payloads(talker))
        assert sent >= tone_count
        share = len(heard) / sent
        figures[name] = (len(heard), sent, round(100 * share, 1))
        assert share >= 0.9, (name, figures)
        assert len(heard) <= sent, "more tone packets heard than sent"
        assert_hears(b"".join(heard), expected, other)
        total = len(received_packets(listener)) / len(sent_payloads(talker))
        assert total >= 0.9, (name, total)
    print("tone packets heard/sent (%):", figures)

    call.hangup()
    wait_until("the BYE at the callee", lambda: incoming.state is CallState.ENDED, SETUP_TIMEOUT)
    record = closed_record(pbx.root, "1001", before)
    assert record["disposition"] == "answered"
    assert record["caller"] == "1002"
    assert record["answered_by"] == "1001"
    assert record["tenant"] == "acme"
    assert record["recording_path"] is None  # neither 1001 nor 1002 records
    assert record["ended_at"] - record["answered_at"] >= TONE_SECONDS
    assert any("caller hung up" in line for line in record["trace"]), record["trace"]
    no_active_calls(pbx.server)
    wait_until("the relay ports released", lambda: ports_in_use(pbx.server) == 0, 5)


# --- 2. the after-hours announcement ------------------------------------------------------------


WINDOW_BLOCKS = 5  # the envelope's 100 ms windows, made of 20 ms blocks


def block_energies(pcm: bytes) -> list[float]:
    """Sum of squares per 20 ms block (160 samples)."""
    samples = array("h", pcm)
    return [
        float(sum(s * s for s in samples[i : i + PACKET]))
        for i in range(0, len(samples) - PACKET + 1, PACKET)
    ]


def envelope(energies: list[float], first: int, count: int) -> list[float]:
    """RMS per 100 ms window, ``count`` windows from block ``first``."""
    size = WINDOW_BLOCKS * PACKET
    return [
        math.sqrt(sum(energies[first + WINDOW_BLOCKS * k : first + WINDOW_BLOCKS * (k + 1)]) / size)
        for k in range(count)
    ]


def pearson(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else 0.0


def envelope_correlation(heard: bytes, prompt: bytes, max_lag: int = 50) -> tuple[float, float]:
    """(lag in seconds, Pearson r) of the 100 ms RMS envelopes, aligned by the best r over lags
    of 20 ms steps up to ``max_lag`` blocks either way. Lag -0.04: the first 40 ms were not heard.
    """
    h, p = block_energies(heard), block_energies(prompt)
    windows = len(p) // WINDOW_BLOCKS
    best = (0.0, -1.0)
    for lag in range(-max_lag, max_lag + 1):
        first = max(0, -lag)  # prompt block ``first`` was heard as block ``first + lag``
        count = min(len(p) - first, len(h) - first - lag) // WINDOW_BLOCKS
        if count < windows * 3 // 4:
            continue
        r = pearson(envelope(h, first + lag, count), envelope(p, first, count))
        if r > best[1]:
            best = (lag * PACKET / RATE, r)
    return best


def test_after_hours_number_plays_the_announcement_then_hangs_up(
    pbx: Pbx, phones: Callable[[RunningServer, str], Phone]
) -> None:
    from pyVoIP.VoIP import CallState

    with wave.open(str(PROMPT), "rb") as prompt_file:
        assert (prompt_file.getframerate(), prompt_file.getnchannels()) == (RATE, 1)
        prompt = prompt_file.readframes(prompt_file.getnframes())
    prompt_seconds = len(prompt) / 2 / RATE

    caller = phones(pbx.server, "1002")
    before = len(call_records(pbx.root, "0612345678"))
    call = caller.call("0612345678")  # the tenant's own number, routed inside to rule 009608
    wait_until(
        "the BYE after the announcement",
        lambda: call.state is CallState.ENDED,
        prompt_seconds + 10,
    )
    bye_at = time.monotonic()
    packets = received_packets(call)
    assert packets, "no RTP from the announcement"
    audio = pcmu_audio(packets)
    heard = b"".join(pcm for _, pcm in audio)

    # Every 20 ms packet of the prompt arrived (the player pads the last one).
    expected = math.ceil(prompt_seconds * RATE / PACKET)
    assert len(audio) >= 0.9 * expected, (len(audio), expected)
    assert len(audio) <= expected + 2, (len(audio), expected)
    # The hang-up came when the prompt had played: BYE about when its last packet came.
    first, last = packets[0][0], packets[-1][0]
    assert prompt_seconds - 1.0 <= last - first <= prompt_seconds + 1.0, last - first
    assert 0 <= bye_at - last < 1.5, bye_at - last

    lag, r = envelope_correlation(heard, prompt)
    print(f"announcement: {len(audio)}/{expected} packets, envelope r={r:.4f} at lag {lag:+.2f}s")
    assert r > 0.8, r
    # The prompt starts with the answer: at most the packets sent before pyVoIP (which opens
    # its RTP socket on reading the 200) could listen are missing from its start.
    assert -0.5 <= lag <= 0.0, lag

    record = closed_record(pbx.root, "0612345678", before)
    assert record["disposition"] == "answered"
    assert record["caller"] == "1002"
    assert record["answered_by"] == "009608"
    assert any("009608 played" in line for line in record["trace"]), record["trace"]
    no_active_calls(pbx.server)


# --- 3. a recorded call -------------------------------------------------------------------------


def test_recorded_call_keeps_each_party_on_its_own_channel(
    pbx: Pbx, phones: Callable[[RunningServer, str], Phone]
) -> None:
    from pyVoIP.VoIP import CallState

    callee = phones(pbx.server, "1003")  # recording = true
    caller = phones(pbx.server, "1002")
    before = len(call_records(pbx.root, "1003"))
    pause = 1.0  # the caller's tone starts a second after the callee's
    call, incoming = talk(caller, callee, "1003", caller_pause=pause)
    call.hangup()
    wait_until("the BYE at the callee", lambda: incoming.state is CallState.ENDED, SETUP_TIMEOUT)

    record = closed_record(pbx.root, "1003", before)
    assert record["disposition"] == "answered"
    assert record["answered_by"] == "1003"
    path = Path(record["recording_path"])
    assert path.parent == pbx.root / "data" / "recordings"
    # The recorder finishes after the call (its last flush); the port gauge drops after that.
    wait_until("the recording to be closed", lambda: ports_in_use(pbx.server) == 0, 10)

    assert_recording(path, record, call, incoming, pause)
    no_active_calls(pbx.server)


def assert_recording(
    path: Path, record: dict[str, Any], call: Any, incoming: Any, pause: float
) -> None:
    """The recording of ``talk(..., caller_pause=pause)``: a stereo WAV as long as the call,
    the caller's tone on the left and the callee's on the right, each where it was sent."""
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, RATE)
        frames = wav.readframes(wav.getnframes())
    duration = len(frames) / 4 / RATE
    call_seconds = record["ended_at"] - record["answered_at"]
    assert call_seconds - 1.0 <= duration <= call_seconds + 0.5, (duration, call_seconds)
    if shutil.which("sox"):
        info = subprocess.run(
            ["sox", "--i", str(path)], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        assert re.search(r"Channels\s*:\s*2", info), info
        assert re.search(r"Sample Rate\s*:\s*8000", info), info

    samples = array("h", frames)
    left, right = samples[0::2].tobytes(), samples[1::2].tobytes()

    def tone_span(channel: bytes) -> tuple[float, float]:
        """First and last 20 ms block (in seconds) carrying sound on one channel."""
        loud = [
            i
            for i in range(0, len(channel) // 2 - PACKET + 1, PACKET)
            if rms(channel[2 * i : 2 * (i + PACKET)]) > TONE_RMS
        ]
        assert loud, "silent channel"
        return loud[0] / RATE, (loud[-1] + PACKET) / RATE

    # When each phone put its tone's first packet on the wire, from the first RTP of the call
    # (the callee's, sent as it answered: the recording starts at the answer).
    first_rtp = min(t for t, _ in sent_payloads(call) + sent_payloads(incoming))
    spans, sent_at = {}, {}
    for name, channel, expected, other, party in (
        ("left", left, CALLER_HZ, CALLEE_HZ, call),
        ("right", right, CALLEE_HZ, CALLER_HZ, incoming),
    ):
        start, end = tone_span(channel)
        spans[name] = (round(start, 3), round(end, 3))
        sent_at[name] = next(t for t, p in sent_payloads(party) if p.strip(b"\x80")) - first_rtp
        # The tone's length on its channel, and its pitch, with the other party's tone absent.
        assert TONE_SECONDS - 0.2 <= end - start <= TONE_SECONDS + 0.3, spans
        assert_hears(channel[2 * round(start * RATE) : 2 * round(end * RATE)], expected, other)
        # At the right time, within the recorder's anchoring and our clock readings.
        assert abs(start - sent_at[name]) <= 0.3, (name, spans, sent_at)
    print("recording tone spans (s):", spans, "sent at (s):", sent_at)
    # The caller's pause shows between the channels as it was sent (to a few packets).
    gap = spans["left"][0] - spans["right"][0]
    assert abs(gap - (sent_at["left"] - sent_at["right"])) <= 0.1, (spans, sent_at)
    assert pause - 0.1 <= gap <= pause + 0.3, gap


# --- 4. RTP inactivity ----------------------------------------------------------------------------


class _Muted:
    """Stands in for a pyVoIP RTP client's sending socket: the phone goes quiet, still listens."""

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        return len(data)

    def close(self) -> None:
        pass


def test_phone_that_stops_sending_rtp_is_hung_up_and_ports_are_freed(
    tmp_path: Path, phones: Callable[[RunningServer, str], Phone]
) -> None:
    from pyVoIP.VoIP import CallState

    inactivity = 2
    config = write_config(tmp_path / "pbx", tenants={"acme": TENANT}, server_extra=SERVER_EXTRA)
    text = config.read_text(encoding="utf-8")  # write_config wrote the [media] table
    config.write_text(text.replace("[media]\n", f"[media]\ninactivity_seconds = {inactivity}\n"))
    with running_server(config) as server:
        callee = phones(server, "1001")
        caller = phones(server, "1002")
        callee.answer_tone = unsigned_tone(CALLEE_HZ, 30)  # talks for longer than the test
        call = caller.call("1001")
        wait_until("media from the callee", lambda: received_packets(call), SETUP_TIMEOUT)
        (incoming,) = callee.incoming
        relay_ports = {client_of(call).outPort, client_of(incoming).outPort}
        assert ports_in_use(server) == 2

        client_of(call).sout = _Muted()  # the caller stops sending, keeps receiving
        muted_at = time.monotonic()
        wait_until(
            "BYE to both phones",
            lambda: call.state is CallState.ENDED and incoming.state is CallState.ENDED,
            inactivity + 8,
        )
        elapsed = time.monotonic() - muted_at
        print(f"inactivity: BYE to both phones {elapsed:.2f}s after the caller went quiet")
        assert inactivity - 0.1 <= elapsed <= inactivity + 3, elapsed

        record = closed_record(tmp_path / "pbx", "1001", 0)
        assert record["disposition"] == "answered"
        assert any(
            f"no RTP from the caller for {inactivity}s" in line for line in record["trace"]
        ), record["trace"]
        wait_until("the relay ports released", lambda: ports_in_use(server) == 0, 5)
        for port in relay_ports:  # free for anyone to bind again
            for offset in (0, 1):  # RTP and RTCP
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind((server.udp[0], port + offset))
        no_active_calls(server)


# --- 5. metrics after a call --------------------------------------------------------------------


def test_metrics_count_the_call_its_sip_messages_and_its_relayed_rtp(
    tmp_path: Path, phones: Callable[[RunningServer, str], Phone]
) -> None:
    from pyVoIP.VoIP import CallState

    # A server of its own: the module's server counts the other tests' calls too.
    root = tmp_path / "pbx"
    with running_server(
        write_config(root, tenants={"acme": TENANT}, server_extra=SERVER_EXTRA)
    ) as server:
        idle = server.metrics()
        assert idle["pbx_calls_total"] == 0  # exposed from the start
        assert idle["pbx_rtp_packets_relayed_total"] == 0
        callee = phones(server, "1001")
        caller = phones(server, "1002")
        call, incoming = talk(caller, callee, "1001")
        call.hangup()
        wait_until(
            "the BYE at the callee", lambda: incoming.state is CallState.ENDED, SETUP_TIMEOUT
        )
        assert closed_record(root, "1001", 0)["disposition"] == "answered"
        no_active_calls(server)
        # The session's counts move to the closed sum when it closes, with its ports.
        wait_until("the relay ports released", lambda: ports_in_use(server) == 0, 5)
        metrics = server.metrics()

        assert metrics['pbx_calls_total{disposition="answered"}'] == 1
        assert not any(
            name.startswith("pbx_calls_total{") and "answered" not in name for name in metrics
        ), metrics
        assert metrics["pbx_calls_active"] == 0
        assert metrics["pbx_registrations"] == 2  # one contact per phone
        # pyVoIP's INVITE, then again with credentials after the 401; one INVITE to the callee.
        assert metrics['pbx_sip_messages_in_total{method="INVITE"}'] == 2
        assert metrics['pbx_sip_messages_out_total{method="INVITE"}'] == 1
        assert metrics['pbx_sip_messages_in_total{method="BYE"}'] == 1
        assert metrics["pbx_rtp_ports_in_use"] == 0
        assert metrics["pbx_config_version"] == 1
        assert metrics["pbx_reloads_total"] == 0
        assert metrics["pbx_event_loop_lag_seconds"] >= 0

        # RTP: every packet relayed was sent by a phone, and every packet a phone heard was
        # relayed (pyVoIP sends its last ones after the BYE, to closed ports: not counted).
        sent = len(sent_payloads(call)) + len(sent_payloads(incoming))
        heard = len(received_packets(call)) + len(received_packets(incoming))
        relayed = metrics["pbx_rtp_packets_relayed_total"]
        print(f"rtp: phones sent {sent}, relay relayed {relayed:g}, phones heard {heard}")
        assert heard <= relayed <= sent, (heard, relayed, sent)
        assert relayed >= 0.9 * sent, (relayed, sent)
        assert metrics["pbx_rtp_packets_received_total"] == relayed + sum(
            metrics[f'pbx_rtp_packets_dropped_total{{reason="{reason}"}}']
            for reason in ("source", "no_destination")
        )
        assert metrics['pbx_rtp_packets_dropped_total{reason="source"}'] == 0
        assert metrics["pbx_rtp_packets_lost_total"] == 0  # loopback, consecutive numbers
        assert "pbx_rtcp_packets_relayed_total" in metrics  # pyVoIP sends no RTCP

        # The phones unregister (here, while the server still answers: the fixture's stop
        # is then a no-op), and the registrations gauge follows.
        caller.stop()
        callee.stop()
        wait_until(
            "the registrations gauge back to 0",
            lambda: server.metrics()["pbx_registrations"] == 0,
            SETUP_TIMEOUT,
            interval=0.05,
        )


# --- pyVoIP's ACK ---------------------------------------------------------------------------------


def test_pyvoip_callers_ack_stops_the_2xx_retransmissions(
    pbx: Pbx, phones: Callable[[RunningServer, str], Phone]
) -> None:
    callee = phones(pbx.server, "1001")
    callee.answer_tone = unsigned_tone(CALLEE_HZ, TONE_SECONDS)
    caller = phones(pbx.server, "1002")
    call = caller.call("1001")  # pyVoIP sent its ACK as it read the 200

    def oks() -> list[Any]:
        from pyVoIP.SIP import SIPMessageType, SIPStatus

        return [
            message
            for _, message in list(caller.phone.sip.__dict__.get("_test_sip", []))
            if message.type is not SIPMessageType.MESSAGE
            and message.status == SIPStatus.OK
            and message.headers["CSeq"]["method"] == "INVITE"
            and message.headers["Call-ID"] == call.call_id
        ]

    # A 2xx whose ACK was lost is sent again after T1 (0.5 s), then 2*T1: 2 s covers both.
    deadline = time.monotonic() + 2.0
    while len(oks()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(oks()) == 1, f"the 200 came {len(oks())} times: the ACK was not taken"


# --- 6. the kernel fast path (issue #21) ----------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="loading nftables tables needs root")
def test_with_kernel_forwarding_the_phones_hear_each_other_and_are_recorded_through_nftables(
    tmp_path: Path, phones: Callable[[RunningServer, str], Phone]
) -> None:
    from pyVoIP.VoIP import CallState

    root = tmp_path / "pbx"
    config = write_config(root, tenants={"acme": TENANT}, server_extra=SERVER_EXTRA)
    text = config.read_text(encoding="utf-8")  # write_config wrote the [media] table
    config.write_text(text.replace("[media]\n", "[media]\nkernel_forwarding = true\n"))
    with running_server(config) as server:
        table = f"pbx_relay_{server.process.pid}"
        callee = phones(server, "1001")
        caller = phones(server, "1002")
        call, incoming = talk(caller, callee, "1001")
        assert nft_table_exists(table)
        # Both directions of RTP in the kernel (pyVoIP sends no RTCP).
        assert server.metrics()["pbx_rtp_kernel_flows"] == 2
        for listener, talker, expected, other in (
            (call, incoming, CALLEE_HZ, CALLER_HZ),
            (incoming, call, CALLER_HZ, CALLEE_HZ),
        ):
            tones = tone_packets(received_packets(listener))
            tones_sent = sent_tone_count(sent_payloads(talker))
            assert len(tones) >= 0.9 * tones_sent, (len(tones), tones_sent)
            assert_hears(b"".join(tones), expected, other)
        call.hangup()
        wait_until(
            "the BYE at the callee", lambda: incoming.state is CallState.ENDED, SETUP_TIMEOUT
        )
        wait_until("the relay ports released", lambda: ports_in_use(server) == 0, 5)
        sent = len(sent_payloads(call)) + len(sent_payloads(incoming))
        heard = len(received_packets(call)) + len(received_packets(incoming))
        # The flows' last counts are read as they are removed, just after the session closed.
        wait_until(
            "the flows removed from the kernel",
            lambda: server.metrics()["pbx_rtp_kernel_flows"] == 0,
            5,
            interval=0.05,
        )
        metrics = server.metrics()
        relayed = metrics["pbx_rtp_packets_relayed_total"]
        kernel = metrics["pbx_rtp_packets_kernel_total"]
        print(f"rtp: phones sent {sent}, relayed {relayed:g} ({kernel:g} by the kernel)")
        assert heard <= relayed <= sent, (heard, relayed, sent)
        # The relay hands the flows over within a second of the media: most of the tones.
        assert kernel >= 0.5 * sent, (kernel, sent)
        assert metrics["pbx_rtp_packets_lost_total"] == 0

        # A recorded call goes to the kernel too, which copies each packet for the recorder:
        # the recording is whole, and no packet reaches a phone twice.
        before = len(call_records(root, "1003"))
        recorded = phones(server, "1003")  # recording = true
        call, incoming = talk(caller, recorded, "1003", caller_pause=1.0)
        assert server.metrics()["pbx_rtp_kernel_flows"] == 2
        call.hangup()
        wait_until(
            "the BYE at the callee", lambda: incoming.state is CallState.ENDED, SETUP_TIMEOUT
        )
        record = closed_record(root, "1003", before)
        wait_until("the recording to be closed", lambda: ports_in_use(server) == 0, 10)
        wait_until(
            "the flows removed from the kernel",
            lambda: server.metrics()["pbx_rtp_kernel_flows"] == 0,
            5,
            interval=0.05,
        )
        sent = len(sent_payloads(call)) + len(sent_payloads(incoming))
        heard = len(received_packets(call)) + len(received_packets(incoming))
        after = server.metrics()
        relayed = after["pbx_rtp_packets_relayed_total"] - metrics["pbx_rtp_packets_relayed_total"]
        kernel = after["pbx_rtp_packets_kernel_total"] - metrics["pbx_rtp_packets_kernel_total"]
        print(f"recorded: phones sent {sent}, relayed {relayed:g} ({kernel:g} by the kernel)")
        assert heard <= relayed <= sent, (heard, relayed, sent)
        assert kernel >= 0.5 * sent, (kernel, sent)
        assert after["pbx_rtp_packets_lost_total"] == 0
        assert_recording(Path(record["recording_path"]), record, call, incoming, 1.0)
    assert not nft_table_exists(table)  # removed at shutdown


def nft_table_exists(name: str) -> bool:
    return subprocess.run(["nft", "list", "table", "ip", name], capture_output=True).returncode == 0
