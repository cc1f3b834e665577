"""End to end with real softphones (issue #18): baresip over TLS + SRTP through pbx run.

Each baresip (Debian ``baresip-core``) plays a sine tone from a WAV file sox made (440 Hz for
the caller, 880 Hz for the callee) and its ``sndfile`` filter writes what it heard; sox or a
Goertzel filter reads the frequency back. The plain-RTP side is SIPp (the phone of the mixed
call, and the carrier on the trunk's address 127.0.0.2): its ``rtp_stream`` plays a raw u-law
tone, and what the relay sent it is read off the wire and decoded here. A raw AF_PACKET socket
on the loopback interface (the tests run as root) captures the calls: the TLS port carries no
clear-text SIP, and the RTP on an encrypted leg is SRTP (the authentication tag makes each 20 ms
PCMU packet 182 octets instead of 172), while the leg to a plain-RTP party stays plain. A
recorded callee's stereo WAV has each party's tone on its own channel; a TLS + SRTP caller hears
the 009608 announcement (its envelope follows the prompt's). A tenant that requires encryption
refuses a UDP REGISTER (403) and an RTP-only offer over TLS (488).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from pbx.media.g711 import decode_ulaw
from tests.integration.harness import (
    DEFAULT_TENANT,
    SIPP_DIR,
    RunningServer,
    free_port,
    running_server,
    sipp_binary,
    stop_process,
    write_config,
)
from tests.integration.sip_client import SipUdpClient
from tests.integration.test_calls import wait_bound
from tests.integration.test_media_calls import (
    PROMPT,
    call_records,
    closed_record,
    envelope_correlation,
    ports_in_use,
    wait_until,
)
from tests.integration.test_tls import SipTlsClient
from tests.media.audio import goertzel_power, split_stereo
from tests.tlscerts import make_certificate

pytestmark = pytest.mark.integration

# This server's [media] rtp_ports, not write_config's RTP_PORTS: the capture sees the whole
# loopback, where other tests' servers relay in that range.
RELAY_PORTS = range(23000, 23200)
EVERY_DAY = 'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]'
SECURE_TENANT = f"""
[tenant]
domain = "secure.example"
timezone = "Asia/Tokyo"
encryption = "require"

[limits]
max_users = 10
recording_users = 1

[[numbers]]
number = "0399999999"

[[numbers]]
number = "0399999998"

[[users]]
extension = "2001"
password = "secret2001"
caller_id = "0399999999"

[[users]]
extension = "2002"
password = "secret2002"
caller_id = "0399999999"
recording = true

# The carrier's calls to the tenant's number ring 2001.
[[incoming]]
number = "0399999999"
targets = "2001"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"

# The other number is after hours all week: the announcement, at any time the test runs.
[[incoming]]
number = "0399999998"
targets = "009608"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"
"""


# --- capture ---------------------------------------------------------------------------------


@dataclass
class Captured:
    protocol: int  # 6 TCP, 17 UDP
    sport: int
    dport: int
    payload: bytes


@dataclass
class LoopbackCapture:
    """Every IPv4 TCP/UDP packet on ``lo`` while running (AF_PACKET needs root: we are)."""

    packets: list[Captured] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, sock: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                frame, meta = sock.recvfrom(65535)
            except TimeoutError:
                continue
            if meta[2] == socket.PACKET_OUTGOING:
                continue  # each loopback packet is seen going out and coming in: keep one
            ip = frame[14:]
            if len(ip) < 20 or ip[0] >> 4 != 4:
                continue
            header = (ip[0] & 0x0F) * 4
            protocol = ip[9]
            if protocol == 17:
                sport, dport = struct.unpack("!HH", ip[header : header + 4])
                self.packets.append(Captured(17, sport, dport, ip[header + 8 :]))
            elif protocol == 6:
                sport, dport = struct.unpack("!HH", ip[header : header + 4])
                offset = (ip[header + 12] >> 4) * 4
                total = struct.unpack("!H", ip[2:4])[0]
                self.packets.append(Captured(6, sport, dport, ip[header + offset : total]))


@contextlib.contextmanager
def capture_loopback() -> Iterator[LoopbackCapture]:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sock.bind(("lo", 0))
    sock.settimeout(0.2)
    capture = LoopbackCapture()
    thread = threading.Thread(target=capture.run, args=(sock,), daemon=True)
    thread.start()
    try:
        yield capture
    finally:
        capture.stop.set()
        thread.join(5)
        sock.close()


CALLER_RTP = range(23300, 23320)  # each baresip's rtp_ports: other tests' traffic is not ours
CALLEE_RTP = range(23400, 23420)


def rtp_sizes(capture: LoopbackCapture, phone: range) -> set[int]:
    """Sizes of RTP-looking datagrams (V=2, PCMU/PCMA) between the relay and one phone."""
    sizes: set[int] = set()
    for p in capture.packets:
        if p.protocol != 17 or len(p.payload) < 12 or p.payload[0] >> 6 != 2:
            continue
        if p.payload[1] & 0x7F not in (0, 8):
            continue
        if (p.sport in RELAY_PORTS and p.dport in phone) or (
            p.dport in RELAY_PORTS and p.sport in phone
        ):
            sizes.add(len(p.payload))
    return sizes


# --- baresip -----------------------------------------------------------------------------------


def baresip_binary() -> str:
    path = shutil.which("baresip")
    assert path is not None, "baresip (Debian baresip-core) is needed: scripts/test.sh installs it"
    return path


def tone(path: Path, hertz: int) -> Path:
    sox = shutil.which("sox")
    assert sox is not None
    subprocess.run(
        [
            sox,
            "-n",
            "-r",
            "8000",
            "-c",
            "1",
            "-b",
            "16",
            str(path),
            "synth",
            "20",
            "sine",
            str(hertz),
        ],
        check=True,
        timeout=30,
    )
    return path


def heard_frequency(folder: Path) -> float:
    """The rough frequency (sox stat) of what this baresip heard (sndfile's *-dec.wav)."""
    [wav] = folder.glob("dump-*-dec.wav")
    result = subprocess.run(
        [shutil.which("sox") or "sox", str(wav), "-n", "stat"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for line in result.stderr.splitlines():
        if line.startswith("Rough   frequency:"):
            return float(line.split(":")[1])
    raise AssertionError(result.stderr)


@contextlib.contextmanager
def baresip(
    folder: Path,
    account: str,
    source: Path,
    cafile: Path,
    rtp: range,
    command: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    folder.mkdir(parents=True)
    (folder / "config").write_text(
        f"sip_cafile {cafile}\n"
        f"rtp_ports {rtp.start}-{rtp.stop - 1}\n"
        "audio_player alsa,null\n"
        f"audio_source aufile,{source}\n"
        f"snd_path {folder}\n"
        "module_path /usr/lib/baresip/modules\n"
        + "".join(
            f"module {name}.so\n"
            for name in ("g711", "alsa", "aufile", "sndfile", "srtp", "account", "menu")
        )
    )
    (folder / "accounts").write_text(account + "\n")
    args = [baresip_binary(), "-f", str(folder)]
    if command:
        args += ["-e", command]
    with (folder / "baresip.log").open("wb") as out:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        yield process
    finally:
        stop_process(process, timeout=5)


def tls_account(user: str, domain: str, server: RunningServer, **extra: str) -> str:
    params = "".join(f";{k}={v}" for k, v in extra.items())
    return (
        f"<sip:{user}@{domain};transport=tls>;auth_pass=secret{user};"
        f'outbound="sip:127.0.0.1:{server.tls[1]};transport=tls";mediaenc=srtp-mand;'
        f"regint=600{params}"
    )


def wait_registered(server: RunningServer, extension: str, transport: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        _, bindings = server.admin_request("GET", "/registrations")
        if any(b["extension"] == extension and b["transport"] == transport for b in bindings):
            return
        time.sleep(0.1)
    raise AssertionError(f"{extension} did not register over {transport}")


def answered_call(server: RunningServer, timeout: float = 10.0) -> dict[str, Any]:
    """The one call in progress once answered, as ``GET /calls`` shows it."""
    deadline = time.monotonic() + timeout
    while True:
        _, calls = server.admin_request("GET", "/calls")
        answered = [c for c in calls if c["state"] == "answered"]
        if answered:
            return cast(dict[str, Any], answered[0])
        assert time.monotonic() < deadline, calls
        time.sleep(0.1)


def wait_ended(server: RunningServer, count: int, timeout: float = 30.0) -> None:
    ended = server.wait_for_events("call_ended", count, timeout)
    assert len(ended) >= count, f"{len(ended)} calls ended, not {count}"


# --- SIPp, the plain-RTP side ----------------------------------------------------------------


def ulaw_tone(folder: Path, hertz: int) -> Path:
    """``tone.ulaw`` in ``folder``: raw u-law at 8 kHz, what SIPp's ``rtp_stream`` plays."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tone.ulaw"
    subprocess.run(
        [
            *(shutil.which("sox") or "sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law"),
            *("-t", "raw", str(path), "synth", "20", "sine", str(hertz)),
        ],
        check=True,
        timeout=30,
    )
    return path


def sipp_args(scenario: str, target: tuple[str, int], local_ip: str, port: int) -> list[str]:
    return [
        sipp_binary(),
        f"{target[0]}:{target[1]}",
        "-sf",
        str(SIPP_DIR / scenario),
        "-t",
        "u1",
        "-i",
        local_ip,
        "-mi",
        local_ip,
        "-p",
        str(port),
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        "30s",
        "-timeout_error",
    ]


@contextlib.contextmanager
def sipp(folder: Path, args: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """SIPp in ``folder`` (where its ``tone.ulaw`` is), output in ``folder/sipp.log``; ended by
    its pid if still running."""
    with (folder / "sipp.log").open("wb") as out:
        process = subprocess.Popen(
            args, cwd=folder, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        stop_process(process, timeout=5)


def sipp_succeeded(process: subprocess.Popen[bytes], folder: Path, timeout: float = 15) -> None:
    assert process.wait(timeout) == 0, (folder / "sipp.log").read_text(errors="replace")[-3000:]


def sdp_audio_port(capture: LoopbackCapture, sport: int, dport: int) -> int:
    """The m=audio port in an SDP body sent over UDP from ``sport`` to ``dport``."""
    for p in capture.packets:
        if p.protocol == 17 and (p.sport, p.dport) == (sport, dport) and b"m=audio " in p.payload:
            return int(p.payload.split(b"m=audio ", 1)[1].split(b" ", 1)[0])
    raise AssertionError(f"no SDP from port {sport} to {dport}")


def plain_leg(capture: LoopbackCapture, relay: int, phone: int) -> tuple[set[int], bytes]:
    """The RTP between our relay's port and a plain-RTP party's port (other tests' relays share
    the loopback and the port range): the datagram sizes both ways, and what the relay sent the
    party, its PCMU decoded to 16-bit PCM."""
    sizes: set[int] = set()
    pcm = bytearray()
    for p in capture.packets:
        payload = p.payload
        if p.protocol != 17 or {p.sport, p.dport} != {relay, phone} or len(payload) < 12:
            continue
        if payload[0] >> 6 != 2 or payload[1] & 0x7F != 0:
            continue
        sizes.add(len(payload))
        if p.dport == phone:
            header = 12 + 4 * (payload[0] & 0x0F)
            if payload[0] & 0x10:  # a header extension
                header += 4 + 4 * struct.unpack("!H", payload[header + 2 : header + 4])[0]
            pcm += decode_ulaw(payload[header:])
    return sizes, bytes(pcm)


def assert_tone(pcm: bytes, expected: int, other: int) -> float:
    """``expected`` Hz is there, far above ``other`` (no crossed streams); the ratio."""
    assert len(pcm) >= 2 * 8000, f"{len(pcm) // 2} samples"
    ratio = goertzel_power(pcm, expected) / max(goertzel_power(pcm, other), 1e-9)
    assert ratio > 100, (expected, ratio)
    return ratio


def heard_pcm(folder: Path) -> bytes:
    """What a baresip heard (sndfile's *-dec.wav), 16-bit PCM at 8 kHz mono."""
    [path] = folder.glob("dump-*-dec.wav")
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        return wav.readframes(wav.getnframes())


def recording_of(root: Path, called: str, before: int) -> tuple[dict[str, Any], Path]:
    """The first closed call record to ``called`` after the ``before`` already there, and its
    recording's path."""
    record = closed_record(root, called, before)
    assert record["recording_path"], record
    path = Path(record["recording_path"])
    return record, path if path.is_absolute() else root / "data" / "recordings" / path


# --- the tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    root = tmp_path_factory.mktemp("baresip")
    cert, _ = make_certificate(root, "sip")
    tone(root / "t440.wav", 440)
    tone(root / "t880.wav", 880)
    config = write_config(
        root,
        tenants={"acme": DEFAULT_TENANT, "secure": SECURE_TENANT},
        listen='["udp:127.0.0.1:0", "tcp:127.0.0.1:0", "tls:127.0.0.1:0"]',
        sip_extra='tls_certificate = "sip.crt"\ntls_key = "sip.key"',
        # baresip 1.0 (libre 1.1) answers only MD5 challenges.
        server_extra='[auth]\nalgorithms = ["MD5"]\n',
        rtp_ports=f"{RELAY_PORTS.start}-{RELAY_PORTS.stop - 1}",
    )
    with running_server(config) as server:
        yield server, cert


@pytest.mark.skipif(os.geteuid() != 0, reason="the loopback capture needs root")
def test_tls_srtp_call_between_two_baresips_each_hears_the_other_nothing_is_clear_and_recorded(
    setup: tuple[RunningServer, Path], tmp_path: Path
) -> None:
    server, cert = setup
    root = cert.parent
    before = len(server.events("call_ended"))
    recorded_before = len(call_records(root, "2002"))
    with capture_loopback() as capture:
        with baresip(
            tmp_path / "callee",
            tls_account("2002", "secure.example", server, answermode="auto"),
            root / "t880.wav",
            cert,
            CALLEE_RTP,
        ):
            wait_registered(server, "2002", "TLS")
            with baresip(
                tmp_path / "caller",
                tls_account("2001", "secure.example", server),
                root / "t440.wav",
                cert,
                CALLER_RTP,
                command="/dial sip:2002@secure.example",
            ):
                started = time.monotonic()
                # GET /calls says both sides are TLS + SRTP once the call is answered.
                assert answered_call(server)["encryption"] == {
                    "caller": {"tls": True, "srtp": True, "encrypted": True},
                    "callee": {"tls": True, "srtp": True, "encrypted": True},
                }
                time.sleep(max(0.0, 6 - (time.monotonic() - started)))  # seconds of tone
        wait_ended(server, before + 1)
    assert abs(heard_frequency(tmp_path / "caller") - 880) < 60
    assert abs(heard_frequency(tmp_path / "callee") - 440) < 60
    # No clear-text SIP on the TLS port.
    tls_packets = [p for p in capture.packets if server.tls[1] in (p.sport, p.dport)]
    assert sum(len(p.payload) for p in tls_packets) > 2000
    for p in tls_packets:
        for word in (b"SIP/2.0", b"REGISTER", b"INVITE", b"acme.example", b"secure.example"):
            assert word not in p.payload
    # Both legs SRTP: every RTP datagram carries the 80-bit tag (160 + 12 + 10 octets, more
    # with a header extension); a plain 20 ms PCMU packet is 172 octets.
    for phone in (CALLER_RTP, CALLEE_RTP):
        sizes = rtp_sizes(capture, phone)
        assert 182 in sizes, sizes
        assert min(sizes) >= 182, sizes
    record = server.wait_for_events("call_ended", before + 1)[-1]
    assert record["disposition"] == "answered"
    # 2002 records: the stereo WAV has the caller's tone on the left, the callee's on the right,
    # decrypted from each leg's SRTP.
    call, path = recording_of(root, "2002", recorded_before)
    assert call["answered_by"] == "2002"
    # The recorder finishes after the call (its last flush); the port gauge drops after that.
    wait_until("the recording to be closed", lambda: ports_in_use(server) == 0, 10)
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        frames = wav.readframes(wav.getnframes())
    seconds = len(frames) / 4 / 8000
    talk = call["ended_at"] - call["answered_at"]
    assert talk - 1.0 <= seconds <= talk + 0.5, (seconds, talk)
    left, right = split_stereo(frames)
    ratios = (assert_tone(left, 440, 880), assert_tone(right, 880, 440))
    print(
        f"recording {seconds:.1f} s; 440/880 power ratio left {ratios[0]:.0f}, "
        f"880/440 right {ratios[1]:.0f}"
    )


@pytest.mark.sipp
@pytest.mark.skipif(os.geteuid() != 0, reason="the loopback capture needs root")
def test_tls_srtp_baresip_calls_a_plain_rtp_sipp_phone_and_audio_flows_both_ways(
    setup: tuple[RunningServer, Path], tmp_path: Path
) -> None:
    """The plain phone is SIPp over UDP (extension 1003 of the tenant that allows plain RTP):
    it plays an 880 Hz tone; what it is sent is read off the wire (plain RTP: the test can)."""
    server, cert = setup
    root = cert.parent
    before = len(server.events("call_ended"))
    plain = tmp_path / "plain"
    ulaw_tone(plain, 880)
    port = free_port()
    register = sipp_args("register.xml", server.udp, "127.0.0.1", port)
    registered = subprocess.run(
        [*register, "-s", "1003", "-au", "1003", "-ap", "secret1003"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert registered.returncode == 0, registered.stdout + registered.stderr
    answer = [*sipp_args("phone_answer_tone.xml", server.udp, "127.0.0.1", port), "-s", "1003"]
    with capture_loopback() as capture, sipp(plain, answer) as phone:
        wait_bound("127.0.0.1", port, time.monotonic() + 10)
        with baresip(
            tmp_path / "caller",
            tls_account("1004", "acme.example", server),
            root / "t440.wav",
            cert,
            CALLER_RTP,
            command="/dial sip:1003@acme.example",
        ):
            assert answered_call(server)["encryption"]["caller"]["encrypted"] is True
            time.sleep(5)
        sipp_succeeded(phone, plain)  # it took the BYE baresip sent as it stopped
        wait_ended(server, before + 1)
    # Audio both ways: baresip heard SIPp's 880 Hz; SIPp was sent baresip's 440 Hz.
    assert_tone(heard_pcm(tmp_path / "caller"), 880, 440)
    # The plain phone's leg (the ports in the SDP each side sent the other) is plain RTP.
    relay = sdp_audio_port(capture, server.udp[1], port)  # our INVITE to the phone
    sizes, sent_to_plain = plain_leg(capture, relay, sdp_audio_port(capture, port, server.udp[1]))
    assert_tone(sent_to_plain, 440, 880)
    assert sizes == {172}
    # The TLS phone's leg is SRTP; its SIP is not in clear.
    secure = rtp_sizes(capture, CALLER_RTP)
    assert 182 in secure, secure
    assert min(secure) >= 182, secure
    # Only this server's SIP ports: other processes may talk SIP on loopback meanwhile.
    ours = {server.udp[1], server.tcp[1]}
    clear_sip = [
        p
        for p in capture.packets
        if p.protocol == 17 and b"SIP/2.0" in p.payload and {p.sport, p.dport} & ours
    ]
    assert clear_sip  # the capture works: the UDP phone's signalling is readable
    assert not any(
        b"sip:1004@" in p.payload
        for p in clear_sip
        if b"REGISTER" in p.payload and server.udp[1] in (p.sport, p.dport)
    )


@pytest.mark.sipp
@pytest.mark.skipif(os.geteuid() != 0, reason="the loopback capture needs root")
def test_carrier_call_with_plain_rtp_reaches_a_phone_of_a_tenant_requiring_encryption(
    setup: tuple[RunningServer, Path], tmp_path: Path
) -> None:
    """SIPp on the trunk's address (127.0.0.2) calls the tenant's number with plain RTP (a
    440 Hz tone); 2001 answers over TLS + SRTP with 880 Hz: the relay bridges SRTP to RTP."""
    server, cert = setup
    root = cert.parent
    before = len(server.events("call_ended"))
    records_before = len(call_records(root, "0399999999"))
    carrier = tmp_path / "carrier"
    ulaw_tone(carrier, 440)
    sip_port = free_port(host="127.0.0.2")
    call = [
        *sipp_args("carrier_call_tone.xml", server.udp, "127.0.0.2", sip_port),
        *("-s", "0399999999", "-d", "5000"),
    ]
    with (
        capture_loopback() as capture,
        baresip(
            tmp_path / "callee",
            tls_account("2001", "secure.example", server, answermode="auto"),
            root / "t880.wav",
            cert,
            CALLEE_RTP,
        ),
    ):
        wait_registered(server, "2001", "TLS")
        with sipp(carrier, call) as process:
            encryption = answered_call(server)["encryption"]
            assert encryption["callee"] == {"tls": True, "srtp": True, "encrypted": True}
            assert encryption["caller"]["srtp"] is False, encryption
            sipp_succeeded(process, carrier)  # it hung up after 5 s of tone
        wait_ended(server, before + 1)
    assert_tone(heard_pcm(tmp_path / "callee"), 440, 880)
    relay = sdp_audio_port(capture, server.udp[1], sip_port)  # our 200 to the carrier
    sizes, sent_to_carrier = plain_leg(
        capture, relay, sdp_audio_port(capture, sip_port, server.udp[1])
    )
    assert_tone(sent_to_carrier, 880, 440)
    assert sizes == {172}  # no SRTP packet slipped through to the carrier (see the relay)
    secure = rtp_sizes(capture, CALLEE_RTP)
    assert 182 in secure, secure
    assert min(secure) >= 182, secure
    record = closed_record(root, "0399999999", records_before)
    assert (record["disposition"], record["answered_by"]) == ("answered", "2001")


def test_tls_srtp_baresip_hears_the_announcement(
    setup: tuple[RunningServer, Path], tmp_path: Path
) -> None:
    """2001 (TLS + SRTP) calls the tenant's number routed to 009608: the prompt is played over
    SRTP, baresip's dump of what it heard follows the prompt's envelope, then the BYE comes."""
    server, cert = setup
    root = cert.parent
    before = len(server.events("call_ended"))
    with wave.open(str(PROMPT), "rb") as prompt_file:
        prompt = prompt_file.readframes(prompt_file.getnframes())
    prompt_seconds = len(prompt) / 2 / 8000
    records_before = len(call_records(root, "0399999998"))
    with baresip(
        tmp_path / "caller",
        tls_account("2001", "secure.example", server),
        root / "t440.wav",
        cert,
        CALLER_RTP,
        command="/dial sip:0399999998@secure.example",
    ):
        assert answered_call(server)["encryption"]["caller"]["srtp"] is True
        wait_ended(server, before + 1, timeout=prompt_seconds + 10)  # the server hung up
    record = closed_record(root, "0399999998", records_before)
    assert (record["disposition"], record["answered_by"]) == ("answered", "009608")
    assert any("009608 played" in line for line in record["trace"]), record["trace"]
    heard = heard_pcm(tmp_path / "caller")
    lag, r = envelope_correlation(heard, prompt, max_lag=100)
    print(
        f"announcement over SRTP: {len(heard) / 16000:.2f} s heard of {prompt_seconds:.2f} s, "
        f"envelope r={r:.4f} at lag {lag:+.2f} s"
    )
    assert r > 0.8, r
    assert -0.5 <= lag <= 0.0, lag  # from the prompt's start, at most its first packets missed
    assert len(heard) / 16000 >= prompt_seconds - 0.5


def test_a_tenant_requiring_encryption_refuses_udp_register_and_rtp_only_offers(
    setup: tuple[RunningServer, Path],
) -> None:
    server, _ = setup
    with SipUdpClient(server.udp, "2001", "secret2001", "secure.example") as phone:
        reply = phone.send(phone.request("REGISTER"))
        assert (reply.status, reply.reason) == (403, "TLS Required")
    phone_tls = SipTlsClient(server.tls, "2001", "secret2001", "secure.example")
    try:
        plain_sdp = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        invite = phone_tls.request("INVITE").replace(
            b"INVITE sip:secure.example", b"INVITE sip:2002@secure.example"
        )
        invite = invite.replace(
            b"Content-Length: 0\r\n\r\n",
            f"Content-Type: application/sdp\r\nContent-Length: {len(plain_sdp)}\r\n\r\n".encode()
            + plain_sdp.encode(),
        )
        reply = phone_tls.send(invite)
        assert (reply.status, reply.reason) == (488, "SRTP Required")
    finally:
        phone_tls.close()
