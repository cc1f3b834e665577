"""rtpengine's pcap recording of a call to a stereo WAV (pure; issue #20).

rtpengine's ``pcap`` recording method (``--recording-format=raw``, link type 101: raw IP)
writes every RTP packet a party sent it, with the party as source and rtpengine's port for
that party as destination. Packets to ``a_port`` are the caller's (left channel), to
``b_port`` the callee's (right). G.711 payloads are decoded; anything else (comfort noise,
RFC 4733 events, RTCP) is skipped. Each packet's samples go where its capture time says,
measured from the first packet of the call, so a party's silence or pause keeps its length;
a packet that comes a little early or late (jitter, up to ``SLACK`` samples) follows the
previous one on its channel instead, so no click-length gaps or overlaps are made.
"""

from __future__ import annotations

import struct

from pbx.media.g711 import Codec, decode
from pbx.media.wav import TELEPHONE_STEREO, build_wav, interleave_stereo

RATE = 8000
SLACK = 480  # samples (60 ms): closer than this to the channel's end, a packet just follows
LINKTYPE_RAW = (101, 12, 228)  # LINKTYPE_RAW, DLT_RAW on some systems, LINKTYPE_IPV4


def pcap_packets(data: bytes) -> list[tuple[float, bytes]]:
    """(capture time, IP packet) of every record; ValueError if it is not a raw-IP pcap."""
    if len(data) < 24:
        raise ValueError("pcap shorter than its header")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        raise ValueError("not a pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    (linktype,) = struct.unpack(order + "I", data[20:24])
    if linktype not in LINKTYPE_RAW:
        raise ValueError(f"pcap link type {linktype} is not raw IP")
    packets, pos = [], 24
    while pos + 16 <= len(data):
        seconds, fraction, length, _ = struct.unpack(order + "IIII", data[pos : pos + 16])
        pos += 16
        packets.append((seconds + fraction / (1e9 if nano else 1e6), data[pos : pos + length]))
        pos += length
    return packets


def udp_of(packet: bytes) -> tuple[int, bytes] | None:
    """(destination port, UDP payload) of an IPv4/IPv6 UDP packet, None for anything else."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20 and packet[9] == 17:
        start = (packet[0] & 0x0F) * 4
    elif version == 6 and len(packet) >= 40 and packet[6] == 17:
        start = 40
    else:
        return None
    if len(packet) < start + 8:
        return None
    (port,) = struct.unpack("!H", packet[start + 2 : start + 4])
    return port, packet[start + 8 :]


def rtp_audio(datagram: bytes) -> bytes | None:
    """The decoded PCM of a G.711 RTP packet, None for anything else."""
    if len(datagram) < 12 or datagram[0] >> 6 != 2:
        return None
    codec = Codec.from_payload_type(datagram[1] & 0x7F)
    if codec is None:
        return None
    start = 12 + 4 * (datagram[0] & 0x0F)
    if datagram[0] & 0x10 and len(datagram) >= start + 4:  # header extension
        (words,) = struct.unpack("!H", datagram[start + 2 : start + 4])
        start += 4 + 4 * words
    end = len(datagram)
    if datagram[0] & 0x20 and end > start:  # padding
        end -= datagram[-1]
    if end <= start:
        return None
    return decode(codec, datagram[start:end], silence_is_zero=True)


def pcap_to_stereo_wav(data: bytes, a_port: int, b_port: int) -> bytes:
    """The call in ``data`` as a 16-bit 8 kHz stereo WAV: caller left, callee right."""
    channels: dict[int, bytearray] = {a_port: bytearray(), b_port: bytearray()}
    first: float | None = None
    for when, packet in pcap_packets(data):
        udp = udp_of(packet)
        if udp is None or udp[0] not in channels:
            continue
        pcm = rtp_audio(udp[1])
        if pcm is None:
            continue
        first = when if first is None else first
        channel = channels[udp[0]]
        at = round((when - first) * RATE)
        if at - len(channel) // 2 > SLACK:
            channel.extend(bytes(2 * at - len(channel)))
        channel.extend(pcm)
    left, right = channels[a_port], channels[b_port]
    size = max(len(left), len(right))
    left.extend(bytes(size - len(left)))
    right.extend(bytes(size - len(right)))
    return build_wav(TELEPHONE_STEREO, interleave_stereo(bytes(left), bytes(right)))
