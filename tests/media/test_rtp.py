"""RTP packets (RFC 3550 §5.1): parse/build round trips over byte-exact fixtures, and helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx.errors import RemoteProtocolError
from pbx.media.rtp import (
    RtpPacket,
    build_rtp,
    build_rtp_header,
    is_rtcp,
    parse_rtp,
    peek_rtp,
    rtcp_port,
    sequence_add,
    sequence_diff,
    timestamp_add,
    timestamp_diff,
)

DATA = Path(__file__).parent / "data" / "rtp"
FIXTURES = sorted(DATA.glob("*.bin"))

# file -> (payload type, marker, sequence, timestamp, ssrc, csrcs, extension profile,
#          extension data, payload, padding)
EXPECTED = {
    "pcmu_basic.bin": (0, False, 1, 160, 0xDEADBEEF, (), None, b"", b"\xff" * 160, b""),
    "pcma_marker_wrap.bin": (8, True, 65535, 0xFFFFFF60, 1, (), None, b"", b"\xd5" * 160, b""),
    "csrc_and_extension.bin": (
        0,
        False,
        0x0102,
        0x1000,
        0x0A0B0C0D,
        (0x11111111, 0x22222222),
        0xBEDE,
        bytes.fromhex("10ab0000"),
        b"\x7f" * 8,
        b"",
    ),
    "padding.bin": (0, False, 5, 800, 0x42, (), None, b"", b"\x01\x02\x03\x04", b"\x00\x00\x03"),
    "telephone_event.bin": (
        101,
        True,
        16,
        0x1234,
        0x0BADF00D,
        (),
        None,
        b"",
        bytes.fromhex("010a00a0"),
        b"",
    ),
}


def test_every_fixture_has_expectations() -> None:
    assert {p.name for p in FIXTURES} == set(EXPECTED)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixture_round_trips_byte_exact(path: Path) -> None:
    data = path.read_bytes()
    assert bytes(parse_rtp(data)) == data


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixture_fields_are_parsed(path: Path) -> None:
    p = parse_rtp(path.read_bytes())
    got = (
        p.payload_type,
        p.marker,
        p.sequence,
        p.timestamp,
        p.ssrc,
        p.csrcs,
        p.extension_profile,
        p.extension_data,
        p.payload,
        p.padding,
    )
    assert got == EXPECTED[path.name]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_peek_agrees_with_parse(path: Path) -> None:
    data = path.read_bytes()
    full, view = parse_rtp(data), peek_rtp(data)
    assert (view.payload_type, view.marker, view.sequence, view.timestamp, view.ssrc) == (
        full.payload_type,
        full.marker,
        full.sequence,
        full.timestamp,
        full.ssrc,
    )
    assert data[view.payload_offset : view.payload_end] == full.payload


def test_fast_header_matches_the_full_builder() -> None:
    packet = RtpPacket(8, 7, 1120, 99, b"\xd5" * 160, marker=True)
    assert build_rtp_header(8, 7, 1120, 99, marker=True) + packet.payload == build_rtp(packet)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00\x00", "too short"),
        (bytes.fromhex("400000010000000000000001"), "version 1"),
        (bytes.fromhex("830000010000000000000001") + b"\x00" * 4, "CSRC list"),
        (bytes.fromhex("900000010000000000000001") + b"\xbe\xde\x00\x02", "extension"),
        (bytes.fromhex("a00000010000000000000001") + b"\x00\x00", "padding count 0"),
        (bytes.fromhex("a00000010000000000000001") + b"\x00\x09", "padding count 9"),
    ],
)
def test_malformed_packets_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        parse_rtp(data)


def test_invalid_values_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="payload type"):
        RtpPacket(128, 0, 0, 0)
    with pytest.raises(ValueError, match="sequence"):
        RtpPacket(0, 65536, 0, 0)
    with pytest.raises(ValueError, match="padding"):
        RtpPacket(0, 0, 0, 0, padding=b"\x00\x05")


def test_rtcp_port_is_the_next_odd_port() -> None:
    assert rtcp_port(20000) == 20001


def test_rtcp_is_told_apart_from_rtp() -> None:
    sender_report = bytes([0x80, 200, 0, 6]) + bytes(24)
    assert is_rtcp(sender_report)
    assert not is_rtcp((DATA / "pcmu_basic.bin").read_bytes())
    assert not is_rtcp((DATA / "telephone_event.bin").read_bytes())  # PT 101 + marker = 229


def test_sequence_arithmetic_wraps() -> None:
    assert sequence_add(65535, 1) == 0
    assert sequence_diff(0, 65535) == 1
    assert sequence_diff(65535, 0) == -1
    assert sequence_diff(100, 90) == 10


def test_timestamp_arithmetic_wraps() -> None:
    assert timestamp_add(0xFFFFFF60, 160) == 0
    assert timestamp_diff(0, 0xFFFFFF60) == 160
    assert timestamp_diff(0xFFFFFF60, 0) == -160
