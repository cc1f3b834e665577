"""End to end with real softphones (issue #18): baresip over TLS + SRTP through pbx run.

Each baresip (Debian ``baresip-core``) plays a sine tone from a WAV file sox made (440 Hz for
the caller, 880 Hz for the callee) and its ``sndfile`` filter writes what it heard; sox reads the
frequency back. A raw AF_PACKET socket on the loopback interface (the tests run as root)
captures the calls: the TLS port carries no clear-text SIP, and the RTP on an encrypted leg is
SRTP (the authentication tag makes each 20 ms PCMU packet 182 octets instead of 172), while the
leg to a plain-RTP phone stays plain. A tenant that requires encryption refuses a UDP REGISTER
(403) and an RTP-only offer over TLS (488).
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from tests.integration.harness import (
    DEFAULT_TENANT,
    RunningServer,
    running_server,
    stop_process,
    write_config,
)
from tests.integration.sip_client import SipUdpClient
from tests.integration.test_tls import SipTlsClient
from tests.tlscerts import make_certificate

pytestmark = pytest.mark.integration

RELAY_PORTS = range(32000, 33000)  # write_config's [media] rtp_ports
SECURE_TENANT = """
[tenant]
domain = "secure.example"
timezone = "Asia/Tokyo"
encryption = "require"

[limits]
max_users = 10

[[numbers]]
number = "0399999999"

[[users]]
extension = "2001"
password = "secret2001"
caller_id = "0399999999"

[[users]]
extension = "2002"
password = "secret2002"
caller_id = "0399999999"
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


CALLER_RTP = range(35100, 35120)  # each baresip's rtp_ports: other tests' traffic is not ours
CALLEE_RTP = range(35200, 35220)


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


def udp_account(user: str, domain: str, server: RunningServer, **extra: str) -> str:
    params = "".join(f";{k}={v}" for k, v in extra.items())
    return (
        f"<sip:{user}@{domain}>;auth_pass=secret{user};"
        f'outbound="sip:127.0.0.1:{server.udp[1]}";regint=600{params}'
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
    server.wait_for_events("call_ended", count, timeout)


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
    )
    with running_server(config) as server:
        yield server, cert


@pytest.mark.skipif(os.geteuid() != 0, reason="the loopback capture needs root")
def test_tls_srtp_call_between_two_baresips_each_hears_the_other_and_nothing_is_clear(
    setup: tuple[RunningServer, Path], tmp_path: Path
) -> None:
    server, cert = setup
    root = cert.parent
    before = len(server.events("call_ended"))
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


@pytest.mark.skipif(os.geteuid() != 0, reason="the loopback capture needs root")
def test_tls_srtp_baresip_calls_a_plain_rtp_phone_and_audio_flows_both_ways(
    setup: tuple[RunningServer, Path], tmp_path: Path
) -> None:
    server, cert = setup
    root = cert.parent
    before = len(server.events("call_ended"))
    with capture_loopback() as capture:
        with baresip(
            tmp_path / "callee",
            udp_account("1003", "acme.example", server, answermode="auto"),
            root / "t880.wav",
            cert,
            CALLEE_RTP,
        ):
            wait_registered(server, "1003", "UDP")
            with baresip(
                tmp_path / "caller",
                tls_account("1004", "acme.example", server),
                root / "t440.wav",
                cert,
                CALLER_RTP,
                command="/dial sip:1003@acme.example",
            ):
                time.sleep(6)
        wait_ended(server, before + 1)
    assert abs(heard_frequency(tmp_path / "caller") - 880) < 60
    assert abs(heard_frequency(tmp_path / "callee") - 440) < 60
    # The plain phone's leg is plain RTP; the TLS phone's leg is SRTP; its SIP is not in clear.
    assert rtp_sizes(capture, CALLEE_RTP) == {172}
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
    assert not any(b"sip:1004@" in p.payload and b"REGISTER" in p.payload for p in clear_sip)


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
