"""rtpengine media plane (issue #20): ng messages and client, the SDP we hand rtpengine, the
requests ``RtpengineMedia`` makes for a call, and rtpengine's pcap made into a stereo WAV."""

from __future__ import annotations

import asyncio
import errno
import io
import socket
import struct
import wave
from array import array
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pbx.config.model import MediaSettings
from pbx.media.bencode import Value, decode, encode
from pbx.media.g711 import Codec, encode_ulaw
from pbx.media.latch import Side
from pbx.media.ng import NgClient, NgError, Reply, checked, ng_reply, ng_request
from pbx.media.pcap_wav import pcap_to_stereo_wav
from pbx.media.rtpengine import (
    RtpengineMedia,
    _Call,
    inactive_sides,
    party_sdp,
    placeholder_sdp,
    received_packets,
    sdp_address,
)
from pbx.media.sdp import AudioStream, Direction

# -- messages ------------------------------------------------------------------------------------


def test_request_and_reply_framing() -> None:
    assert ng_request(b"c1", {"command": "ping"}) == b"c1 d7:command4:pinge"
    assert ng_reply(b"c1 d6:result4:ponge") == (b"c1", {b"result": b"pong"})


@pytest.mark.parametrize("data", [b"nocookie", b"c1 d6:result", b"c1 i3e", b"c1 "])
def test_unreadable_replies(data: bytes) -> None:
    with pytest.raises(NgError):
        ng_reply(data)


def test_error_result_names_rtpengine_reason() -> None:
    with pytest.raises(NgError, match="Unknown call-id"):
        checked({b"result": b"error", b"error-reason": b"Unknown call-id"})
    assert checked({b"result": b"ok"}) == {b"result": b"ok"}


# -- the client against a fake rtpengine on loopback --------------------------------------------


class FakeEngine(asyncio.DatagramProtocol):
    """Answers ng requests; drops the first ``drop`` datagrams (a lost packet)."""

    def __init__(self, drop: int = 0, silent: bool = False) -> None:
        self.drop, self.silent = drop, silent
        self.seen: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.seen.append(data)
        if self.silent or len(self.seen) <= self.drop:
            return
        cookie, _, body = data.partition(b" ")
        command = decode(body)
        assert isinstance(command, dict)
        result = b"pong" if command[b"command"] == b"ping" else b"ok"
        self.transport.sendto(cookie + b" " + encode({"result": result}), addr)


async def fake_engine(protocol: FakeEngine) -> tuple[Any, int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: protocol, local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )
    return transport, transport.get_extra_info("sockname")[1]


@pytest.mark.asyncio
async def test_client_retries_a_lost_request_with_the_same_cookie() -> None:
    engine = FakeEngine(drop=1)
    transport, port = await fake_engine(engine)
    client = NgClient(("127.0.0.1", port), timeout=0.05, attempts=3)
    try:
        assert await client.request({"command": "ping"}) == {b"result": b"pong"}
    finally:
        client.close()
        transport.close()
    assert len(engine.seen) == 2
    assert engine.seen[0] == engine.seen[1]  # rtpengine answers a repeat from its cache


@pytest.mark.asyncio
async def test_client_gives_up_after_its_attempts_and_bounds_waiting_requests() -> None:
    engine = FakeEngine(silent=True)
    transport, port = await fake_engine(engine)
    client = NgClient(("127.0.0.1", port), timeout=0.02, attempts=2, max_pending=1)
    try:
        await client.connect()
        first = asyncio.ensure_future(client.request({"command": "ping"}))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        with pytest.raises(NgError, match="too many"):
            await client.request({"command": "ping"})
        with pytest.raises(NgError, match="did not answer"):
            await first
    finally:
        client.close()
        transport.close()
    assert len(engine.seen) == 2


# -- SDP -------------------------------------------------------------------------------------


def test_party_sdp_carries_address_port_codecs_events_and_direction() -> None:
    stream = AudioStream("192.0.2.7", 4000, Direction.SENDONLY, (Codec.PCMA,), 101)
    sdp = party_sdp(stream).decode()
    assert "c=IN IP4 192.0.2.7\r\n" in sdp
    assert "m=audio 4000 RTP/AVP 8 101\r\n" in sdp
    assert "a=rtpmap:8 PCMA/8000\r\n" in sdp
    assert "a=rtpmap:101 telephone-event/8000\r\n" in sdp
    assert sdp.endswith("a=sendonly\r\n")
    held = AudioStream(None, 0, Direction.INACTIVE, (Codec.PCMU,), None)
    assert "c=IN IP4 0.0.0.0\r\n" in party_sdp(held).decode()
    assert "m=audio 9 RTP/AVP 0 8 101\r\n" in placeholder_sdp("10.0.0.1").decode()


def test_sdp_address_of_a_reply() -> None:
    reply: Reply = {b"sdp": b"v=0\r\nc=IN IP4 203.0.113.5\r\nm=audio 35002 RTP/AVP 0\r\n"}
    assert sdp_address(reply) == ("203.0.113.5", 35002)
    with pytest.raises(NgError):
        sdp_address({b"result": b"ok"})


# -- RtpengineMedia's requests for one call --------------------------------------------------


class ScriptedClient:
    """Stands in for NgClient: records requests, answers offer/answer with SDP."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Value]] = []
        self.ports = iter(range(35000, 36000, 2))

    async def request(self, command: dict[str, Value]) -> Reply:
        self.requests.append(command)
        if command["command"] in ("offer", "answer"):
            sdp = b"c=IN IP4 198.51.100.9\r\nm=audio %d RTP/AVP 0\r\n" % next(self.ports)
            return {b"result": b"ok", b"sdp": sdp}
        if command["command"] == "play media":
            return {b"result": b"ok", b"duration": 100}
        return {b"result": b"ok"}


@pytest.mark.asyncio
async def test_a_call_offer_answer_remote_sides_prompt_and_delete(tmp_path: Path) -> None:
    media = RtpengineMedia(lambda: 0.0, ("127.0.0.1", 1))
    client = ScriptedClient()
    media.client = client  # type: ignore[assignment]
    ports = await media.open("call1", MediaSettings(), "127.0.0.1", lambda side: None)
    assert ports == (35002, 35000)  # A's port comes from the answer, B's from the offer
    assert media.media_host("call1") == "198.51.100.9"
    assert media.ports_in_use == 2
    stream = AudioStream("192.0.2.7", 4000, Direction.SENDRECV, (Codec.PCMU,), None)
    media.set_remote("call1", Side.A, stream)
    media.set_remote("call1", Side.B, stream)
    played = asyncio.Event()
    media.play("call1", "009608", Codec.PCMU, lambda packets: played.set())
    await asyncio.wait_for(played.wait(), 2)
    media.release("call1")
    await asyncio.gather(*media._tasks)
    commands = [(r["command"], r.get("to-tag")) for r in client.requests]
    assert commands == [
        ("offer", None),
        ("answer", "b"),
        ("offer", "b"),  # side A's real SDP, same tags: rtpengine keeps its ports
        ("answer", "b"),
        ("play media", None),
        ("delete", None),
    ]
    assert all("port latching" in r["flags"] for r in client.requests[:4])  # type: ignore[operator]
    assert client.requests[2]["sdp"] == party_sdp(stream)
    assert len({r["call-id"] for r in client.requests}) == 1
    assert media.ports_in_use == 0


@pytest.mark.asyncio
async def test_open_fails_cleanly_when_rtpengine_does_not_answer() -> None:
    media = RtpengineMedia(lambda: 0.0, ("127.0.0.1", 1))

    async def down(command: dict[str, Value]) -> Reply:
        raise NgError("rtpengine at 127.0.0.1:1 did not answer")

    media.client.request = down  # type: ignore[method-assign]
    with pytest.raises(NgError):
        await media.open("call1", MediaSettings(), "127.0.0.1", lambda side: None)
    assert media.ports_in_use == 0
    assert media.media_host("call1") == ""


# -- pcap to stereo WAV --------------------------------------------------------------------------


def rtp_ip(src: int, dst: int, seq: int, payload: bytes, payload_type: int = 0) -> bytes:
    rtp = struct.pack("!BBHII", 0x80, payload_type, seq, seq * 160, 1) + payload
    udp = struct.pack("!HHHH", src, dst, 8 + len(rtp), 0) + rtp
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b"\x7f\0\0\1", b"\x7f\0\0\1"
    )
    return ip + udp


def pcap(records: list[tuple[float, bytes]]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]
    for when, packet in records:
        seconds = int(when)
        out.append(
            struct.pack("<IIII", seconds, round((when - seconds) * 1e6), len(packet), len(packet))
        )
        out.append(packet)
    return b"".join(out)


def test_pcap_becomes_stereo_with_each_party_on_its_channel_and_pauses_kept() -> None:
    loud = encode_ulaw(array("h", [8000, -8000] * 80).tobytes())
    records = [(100.0 + 0.02 * i, rtp_ip(5000, 35002, i, loud)) for i in range(10)]  # caller
    # The callee starts 1 s later; a comfort-noise packet and stray traffic are skipped.
    records += [(101.0 + 0.02 * i, rtp_ip(6000, 35000, i, loud)) for i in range(10)]
    records += [(101.0, rtp_ip(6000, 35000, 99, b"\x40", 13)), (101.0, rtp_ip(7, 9, 0, loud))]
    records.sort(key=lambda record: record[0])
    with wave.open(io.BytesIO(pcap_to_stereo_wav(pcap(records), 35002, 35000)), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        samples = array("h", wav.readframes(wav.getnframes()))
    left, right = samples[0::2], samples[1::2]
    assert len(left) == 8000 + 1600  # 1 s, then the callee's 10 packets
    loud_left = [i for i, s in enumerate(left) if s]
    loud_right = [i for i, s in enumerate(right) if s]
    assert (loud_left[0], loud_left[-1]) == (0, 1599)
    assert (loud_right[0], loud_right[-1]) == (8000, 9599)


@pytest.mark.parametrize(
    "data", [b"", b"\0" * 24, struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
)
def test_not_a_raw_ip_pcap(data: bytes) -> None:
    with pytest.raises(ValueError, match="pcap"):
        pcap_to_stereo_wav(data, 1, 2)


# -- inactivity from rtpengine's packet counts ----------------------------------------------------


def query_reply(a: int, b: int) -> Reply:
    def party(packets: int) -> dict[bytes, Any]:
        rtp = {b"stats": {b"packets": packets}}
        rtcp = {b"stats": {b"packets": 0}}
        return {b"medias": [{b"streams": [rtp, rtcp]}]}

    return {b"result": b"ok", b"tags": {b"a": party(a), b"b": party(b)}}


def test_received_packets_of_a_query_reply() -> None:
    assert received_packets(query_reply(7, 3), "a") == 7
    assert received_packets(query_reply(7, 3), "b") == 3
    assert received_packets({b"result": b"ok"}, "a") == 0
    assert received_packets({b"tags": {b"a": {b"medias": [b"junk"]}}}, "a") == 0


def test_a_party_silent_for_the_inactivity_time_is_reported_once_then_rearmed() -> None:
    call = _Call("n-c1")
    sending = AudioStream("192.0.2.7", 4000, Direction.SENDRECV, (Codec.PCMU,), None)
    call.streams = {Side.A: sending, Side.B: replace(sending, direction=Direction.RECVONLY)}
    assert inactive_sides(call, query_reply(0, 0), 0.0, 10) == []  # counting starts
    assert inactive_sides(call, query_reply(50, 0), 5.0, 10) == []
    # B does not send (recvonly): never reported; A silent from 5 s on.
    assert inactive_sides(call, query_reply(50, 0), 14.0, 10) == []
    assert inactive_sides(call, query_reply(50, 0), 15.0, 10) == [Side.A]
    assert inactive_sides(call, query_reply(50, 0), 30.0, 10) == []  # once
    assert inactive_sides(call, query_reply(51, 0), 31.0, 10) == []  # sends again: re-armed
    assert inactive_sides(call, query_reply(51, 0), 41.0, 10) == [Side.A]


@pytest.mark.asyncio
async def test_the_watcher_calls_on_inactive_and_stops_at_release() -> None:
    now = [0.0]
    media = RtpengineMedia(lambda: now[0], ("127.0.0.1", 1))
    client = ScriptedClient()

    async def request(command: dict[str, Value]) -> Reply:
        if command["command"] == "query":
            now[0] += 1.0
            return query_reply(0, 0)
        return await ScriptedClient.request(client, command)

    media.client.request = request  # type: ignore[method-assign]
    silent: list[Side] = []
    reported = asyncio.Event()

    def on_inactive(side: Side) -> None:
        silent.append(side)
        reported.set()

    await media.open("c1", MediaSettings(inactivity_seconds=1), "127.0.0.1", on_inactive)
    stream = AudioStream("192.0.2.7", 4000, Direction.SENDRECV, (Codec.PCMU,), None)
    media.set_remote("c1", Side.A, stream)
    await asyncio.wait_for(reported.wait(), 5)
    assert silent == [Side.A]
    media.release("c1")
    await asyncio.gather(*media._tasks)
    await asyncio.sleep(0)


def test_a_recording_that_cannot_be_written_whole_leaves_no_partial_wav(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pcaps = tmp_path / "rtpengine" / "pcaps"
    pcaps.mkdir(parents=True)
    loud = encode_ulaw(array("h", [8000, -8000] * 80).tobytes())
    records = [(100.0 + 0.02 * i, rtp_ip(5000, 35002, i, loud)) for i in range(10)]
    records += [(100.01 + 0.02 * i, rtp_ip(6000, 35000, i, loud)) for i in range(10)]
    (pcaps / "ng1-1.pcap").write_bytes(pcap(sorted(records, key=lambda record: record[0])))
    media = RtpengineMedia(lambda: 0.0, ("127.0.0.1", 1), recording_dir=tmp_path / "rtpengine")
    call = _Call("ng1", ports=(35002, 35000), recording=tmp_path / "rec" / "call.wav")
    real_write = Path.write_bytes

    def disk_full_halfway(self: Path, data: bytes) -> int:
        real_write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full_halfway)
    media._write_recording(call)
    # Nothing at the recording's path (a reader would take half a WAV for the call), no
    # leftover, and the pcap kept.
    assert list((tmp_path / "rec").iterdir()) == []
    assert (pcaps / "ng1-1.pcap").exists()
    monkeypatch.undo()
    media._write_recording(call)
    with wave.open(str(call.recording), "rb") as wav:
        assert (wav.getnchannels(), wav.getnframes()) == (2, 1600)
    assert list((tmp_path / "rec").iterdir()) == [call.recording]
    assert list(pcaps.iterdir()) == []
