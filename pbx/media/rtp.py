"""RTP packets (RFC 3550 §5.1, §5.3.1) and the RTP/RTCP port and number helpers.

Pure: bytes in, values out. ``bytes(parse_rtp(x)) == x`` for every well-formed packet, padding
and header extension included. RTCP goes to the RTP port + 1 (RFC 3550 §11: "RTP SHOULD use an
even destination port number and the corresponding RTCP stream SHOULD use the next higher (odd)
destination port number"). Sequence numbers wrap at 2**16 and timestamps at 2**32 (§5.1), so
comparisons use serial-number arithmetic (the signed difference modulo the field size).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pbx.errors import RemoteProtocolError

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
SEQUENCE_MODULUS = 1 << 16
TIMESTAMP_MODULUS = 1 << 32
# RFC 5761 §4: RTCP packet types 192-223 never collide with RTP payload types 0-95 (plus marker).
_RTCP_TYPES = range(192, 224)

_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet; ``payload`` excludes the padding, which is kept in ``padding``."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    # RFC 3550 §5.3.1: a 16-bit profile-defined value and the extension words, or None.
    extension_profile: int | None = None
    extension_data: bytes = b""
    # The padding octets as received, the last one holding their count (§5.1, "padding (P)").
    padding: bytes = field(default=b"")

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type < 128:
            raise ValueError(f"payload type {self.payload_type} out of range 0..127")
        if not 0 <= self.sequence < SEQUENCE_MODULUS:
            raise ValueError(f"sequence {self.sequence} out of range")
        if not 0 <= self.timestamp < TIMESTAMP_MODULUS:
            raise ValueError(f"timestamp {self.timestamp} out of range")
        if not 0 <= self.ssrc < TIMESTAMP_MODULUS:
            raise ValueError(f"ssrc {self.ssrc} out of range")
        if len(self.csrcs) > 15:
            raise ValueError("at most 15 CSRCs")
        if len(self.extension_data) % 4:
            raise ValueError("extension data must be a whole number of 32-bit words")
        if self.padding and self.padding[-1] != len(self.padding):
            raise ValueError("the last padding octet must hold the padding length")

    def __bytes__(self) -> bytes:
        return build_rtp(self)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP packet; raise RemoteProtocolError if it is not RTP version 2."""
    if len(data) < RTP_HEADER_SIZE:
        raise RemoteProtocolError(f"RTP packet too short ({len(data)} bytes)")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RemoteProtocolError(f"RTP version {first >> 6}, expected 2")
    csrc_count = first & 0x0F
    offset = RTP_HEADER_SIZE + 4 * csrc_count
    if len(data) < offset:
        raise RemoteProtocolError("RTP packet shorter than its CSRC list")
    csrcs = struct.unpack_from(f"!{csrc_count}I", data, RTP_HEADER_SIZE)
    extension_profile: int | None = None
    extension_data = b""
    if first & 0x10:
        if len(data) < offset + 4:
            raise RemoteProtocolError("RTP header extension truncated")
        extension_profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
        offset += 4
        if len(data) < offset + 4 * words:
            raise RemoteProtocolError("RTP header extension truncated")
        extension_data = bytes(data[offset : offset + 4 * words])
        offset += 4 * words
    end = len(data)
    padding = b""
    if first & 0x20:
        count = data[-1]
        if count == 0 or end - count < offset:
            raise RemoteProtocolError(f"RTP padding count {count} is invalid")
        end -= count
        padding = bytes(data[end:])
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrcs=tuple(csrcs),
        extension_profile=extension_profile,
        extension_data=extension_data,
        padding=padding,
    )


def build_rtp(packet: RtpPacket) -> bytes:
    """Serialise an RtpPacket (the inverse of parse_rtp)."""
    first = (
        RTP_VERSION << 6
        | (0x20 if packet.padding else 0)
        | (0x10 if packet.extension_profile is not None else 0)
        | len(packet.csrcs)
    )
    second = (0x80 if packet.marker else 0) | packet.payload_type
    parts = [_HEADER.pack(first, second, packet.sequence, packet.timestamp, packet.ssrc)]
    if packet.csrcs:
        parts.append(struct.pack(f"!{len(packet.csrcs)}I", *packet.csrcs))
    if packet.extension_profile is not None:
        words = len(packet.extension_data) // 4
        parts.append(_EXTENSION_HEADER.pack(packet.extension_profile, words))
        parts.append(packet.extension_data)
    parts.append(packet.payload)
    parts.append(packet.padding)
    return b"".join(parts)


def build_rtp_header(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, *, marker: bool = False
) -> bytes:
    """The fixed 12-byte header (no CSRC, extension or padding): the sender's fast path."""
    return _HEADER.pack(0x80, (0x80 if marker else 0) | payload_type, sequence, timestamp, ssrc)


@dataclass(frozen=True, slots=True)
class RtpHeaderView:
    """The fields a receiver needs, read without copying the payload (see peek_rtp)."""

    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload_offset: int
    payload_end: int


def peek_rtp(data: bytes) -> RtpHeaderView:
    """Read the header fields and the payload bounds; raise RemoteProtocolError if invalid."""
    if len(data) < RTP_HEADER_SIZE:
        raise RemoteProtocolError(f"RTP packet too short ({len(data)} bytes)")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RemoteProtocolError(f"RTP version {first >> 6}, expected 2")
    offset = RTP_HEADER_SIZE + 4 * (first & 0x0F)
    if first & 0x10:
        if len(data) < offset + 4:
            raise RemoteProtocolError("RTP header extension truncated")
        offset += 4 + 4 * _EXTENSION_HEADER.unpack_from(data, offset)[1]
    end = len(data)
    if first & 0x20:
        end -= data[-1]
    if end < offset or (first & 0x20 and data[-1] == 0):
        raise RemoteProtocolError("RTP packet truncated or padding invalid")
    return RtpHeaderView(second & 0x7F, bool(second & 0x80), sequence, timestamp, ssrc, offset, end)


def is_rtcp(data: bytes) -> bool:
    """True if a datagram looks like RTCP (version 2, packet type 192-223; RFC 5761 §4)."""
    return len(data) >= 8 and data[0] >> 6 == RTP_VERSION and data[1] in _RTCP_TYPES


def rtcp_port(rtp_port: int) -> int:
    """The RTCP port paired with an RTP port (RFC 3550 §11: the next higher, odd, port)."""
    return rtp_port + 1


def sequence_add(sequence: int, count: int) -> int:
    """Advance a sequence number by count, wrapping at 2**16."""
    return (sequence + count) % SEQUENCE_MODULUS


def sequence_diff(later: int, earlier: int) -> int:
    """Signed distance later - earlier in serial-number arithmetic (-32768..32767)."""
    return (later - earlier + 0x8000) % SEQUENCE_MODULUS - 0x8000


def timestamp_add(timestamp: int, count: int) -> int:
    """Advance an RTP timestamp by count samples, wrapping at 2**32."""
    return (timestamp + count) % TIMESTAMP_MODULUS


def timestamp_diff(later: int, earlier: int) -> int:
    """Signed distance later - earlier in serial-number arithmetic (-2**31..2**31-1)."""
    return (later - earlier + 0x8000_0000) % TIMESTAMP_MODULUS - 0x8000_0000
